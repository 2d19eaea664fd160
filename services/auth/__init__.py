"""Auth: who may do what. Issues signed access tokens and decides every clear request."""
