// Start: speak the remembered language (zh-CN by default), then sign in again if a token is kept.
"use strict";

loadLanguage(i18n.locale).catch(() => translatePage()).then(() => {
  if (state.token) signIn(state.token); else show("login");
});
