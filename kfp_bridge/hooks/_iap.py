"""``auth=iap``: OIDC ID tokens for a Google IAP client id, from the Google Cloud connection.

IAP accepts a Google-issued ID token whose ``aud`` is the OAuth client id of the
IAP-secured resource, in ``Authorization: Bearer`` (Google Cloud docs, IAP
"Programmatic authentication", cloud.google.com/iap/docs/authentication-howto). An
OAuth *access* token (what ``auth=google`` sends to the AI Platform Pipelines inverse
proxy) is refused. ``kfp.Client(client_id=...)`` does the same for a service account
(``kfp/client/auth.py`` ``get_auth_token``); with a token in hand it is
``kfp.Client(existing_token=...)``.

The identity is the Google Cloud connection's (``gcp_conn_id``, read by the Google
provider's hook), turned into google-auth ID-token credentials of the same principal:

- a service-account key: ``google.oauth2.service_account.IDTokenCredentials`` (a
  signed JWT grant with ``target_audience`` at the key's token URI);
- an impersonation chain: ``google.auth.impersonated_credentials.IDTokenCredentials``
  (IAM Credentials ``generateIdToken``);
- the GCE/GKE metadata server (Cloud Composer): ``google.auth.compute_engine.
  IDTokenCredentials`` (the metadata ``identity`` endpoint).

User credentials (``gcloud auth application-default login``) cannot mint an ID token
for another client id; that is an :class:`~kfp_bridge.exceptions.AuthError` naming
what to use instead.
"""

from __future__ import annotations

from typing import Any

from kfp_bridge.exceptions import AuthError


def id_token_credentials(credentials: Any, audience: str) -> Any:
    """ID-token credentials for ``audience`` of the principal behind ``credentials``."""
    from google.auth import compute_engine, impersonated_credentials
    from google.oauth2 import service_account

    if isinstance(credentials, impersonated_credentials.Credentials):
        return impersonated_credentials.IDTokenCredentials(
            credentials, target_audience=audience, include_email=True
        )
    if isinstance(credentials, service_account.Credentials):
        return service_account.IDTokenCredentials(
            credentials.signer,
            credentials.service_account_email,
            credentials._token_uri,  # the key file's token_uri (no public accessor)
            target_audience=audience,
        )
    if isinstance(credentials, compute_engine.Credentials):
        import google.auth.transport.requests

        return compute_engine.IDTokenCredentials(
            google.auth.transport.requests.Request(),
            target_audience=audience,
            use_metadata_identity_endpoint=True,
        )
    raise AuthError(
        f"auth=iap needs a service-account identity to mint an ID token for the IAP client "
        f"id, but the Google Cloud connection gives {type(credentials).__module__}."
        f"{type(credentials).__name__}: use a service-account key, an impersonation_chain, "
        "or the metadata server's service account (GCE, GKE, Cloud Composer)"
    )
