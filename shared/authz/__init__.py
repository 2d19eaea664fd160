"""Who may do what, decided in one place for every consumer, HTTP route and command.

- `tokens`: bearer tokens (Ed25519 JWT) and the keys that sign and verify them;
- `roles`: roles, actions, branch scopes and the second-factor rule, as data;
- `revocations`: revoked tokens, read by every deciding process before each decision;
- `decide`: the decision itself (`Authorizer`, `permit`);
- `delegation`: what a token asked for over HTTP may carry;
- `identity`: the per-service signature bound to each internal message.

services/auth keeps the accounts (passwords, TOTP, lockout) and issues tokens at login.
"""

from shared.authz.decide import Authorizer, action_of, permit, permit_branches
from shared.authz.revocations import RevocationList
from shared.authz.roles import ALL_BRANCHES, Action, Role, covers, permits
from shared.authz.tokens import KeyRing, Principal, bearer

__all__ = ["ALL_BRANCHES", "Action", "Authorizer", "KeyRing", "Principal", "RevocationList", "Role", "action_of",
           "bearer", "covers", "permit", "permit_branches", "permits"]
