//! Who may subscribe to a node's plan: the agent ServiceAccount, with a token bound to a pod on
//! that node.
//!
//! The plan reveals every pod address and rule that applies on a node, so a token is checked
//! with a TokenReview against the API server (no local JWT parsing, so revocation and bound-object
//! deletion are honoured), and the node comes from the token's own binding (the
//! `authentication.kubernetes.io/node-name` extra the API server adds to tokens bound to a pod on
//! a node), never from what the client claims.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

/// The TokenReview extra that names the node of the pod a token is bound to.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// How long a successful review is reused, so a reconnect storm does not become a TokenReview
/// storm. Short, so a revoked token stops working soon.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Bounds the cache; beyond it, expired entries are dropped, and if none are, everything.
const CACHE_LIMIT: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No or malformed credentials, or the API server does not accept the token: 401.
    Unauthenticated(String),
    /// A valid identity that may not read this node's plan: 403.
    Forbidden(String),
    /// The review itself could not be made: 503.
    Unavailable(String),
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Unauthenticated(reason) | AuthError::Forbidden(reason) | AuthError::Unavailable(reason) => {
                f.write_str(reason)
            }
        }
    }
}

/// The identity a TokenReview returned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ReviewedIdentity {
    username: String,
    node: Option<String>,
}

pub struct Authenticator {
    client: Client,
    /// `system:serviceaccount:<namespace>:<name>` of the agents.
    agent_username: String,
    /// The audience a token must be valid for; `None` is the API server's.
    audience: Option<String>,
    cache: Mutex<HashMap<String, (Instant, ReviewedIdentity)>>,
    /// Why agents cannot be authenticated now (no right to create TokenReviews), if so. Until
    /// the first check it says so too: readiness must not claim what was never verified.
    unable: Mutex<Option<String>>,
}

impl Authenticator {
    pub fn new(client: Client, agent_namespace: &str, agent_name: &str, audience: Option<String>) -> Authenticator {
        Authenticator {
            client,
            agent_username: format!("system:serviceaccount:{agent_namespace}:{agent_name}"),
            audience,
            cache: Mutex::new(HashMap::new()),
            unable: Mutex::new(Some("the TokenReview permission has not been checked yet".into())),
        }
    }

    /// Why agents cannot be authenticated, if they cannot: `/readyz` fails with it.
    pub fn unable(&self) -> Option<String> {
        self.unable.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set_unable(&self, reason: Option<String>) {
        let mut unable = self.unable.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *unable != reason {
            match &reason {
                Some(reason) => tracing::warn!(%reason, "agents cannot be authenticated; not ready"),
                None => tracing::info!("agents can be authenticated (TokenReview create allowed)"),
            }
            *unable = reason;
        }
    }

    /// Asks the API server whether this operator may create TokenReviews (a
    /// SelfSubjectAccessReview), now and every `interval`, until `shutdown`.
    pub async fn watch_permission(&self, interval: Duration, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            self.check_permission().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn check_permission(&self) {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some("authentication.k8s.io".into()),
                    resource: Some("tokenreviews".into()),
                    verb: Some("create".into()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        match Api::<SelfSubjectAccessReview>::all(self.client.clone()).create(&PostParams::default(), &review).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|status| status.allowed) => self.set_unable(None),
            Ok(answer) => {
                let why = answer.status.and_then(|status| status.reason).unwrap_or_default();
                self.set_unable(Some(format!(
                    "this operator may not create tokenreviews.authentication.k8s.io, so every agent would be refused{}",
                    if why.is_empty() { String::new() } else { format!(" ({why})") }
                )));
            }
            // The API server is unreachable: nothing new is known; keep the last answer.
            Err(error) => tracing::debug!(%error, "could not check the TokenReview permission"),
        }
    }

    /// Checks an `Authorization` header value for a subscription to `node`.
    pub async fn authorize(&self, authorization: Option<&str>, node: &str) -> Result<(), AuthError> {
        let token = bearer_token(authorization)?;
        let identity = match self.cached(token) {
            Some(identity) => identity,
            None => {
                let identity = self.review(token).await?;
                self.remember(token, &identity);
                identity
            }
        };
        if identity.username != self.agent_username {
            return Err(AuthError::Forbidden(format!(
                "{} is not the agent ServiceAccount ({})",
                identity.username, self.agent_username
            )));
        }
        match identity.node.as_deref() {
            Some(bound) if bound == node => Ok(()),
            Some(bound) => {
                Err(AuthError::Forbidden(format!("the token is bound to a pod on node {bound}, not on node {node}")))
            }
            None => Err(AuthError::Forbidden(format!(
                "the token is not bound to a pod on a node (no {NODE_NAME_EXTRA}); agents must use a projected token"
            ))),
        }
    }

    async fn review(&self, token: &str) -> Result<ReviewedIdentity, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_owned()), audiences: self.audience.clone().map(|a| vec![a]) },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| {
                if matches!(&error, kube::Error::Api(status) if status.code == 403) {
                    self.set_unable(Some(format!("TokenReview create is forbidden: {error}")));
                }
                AuthError::Unavailable(format!("TokenReview failed: {error}"))
            })?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let reason = status.error.unwrap_or_else(|| "the API server did not authenticate the token".into());
            return Err(AuthError::Unauthenticated(format!("token rejected: {reason}")));
        }
        // The API server authenticates a token only for audiences it carries, and says which.
        if let Some(audience) = &self.audience
            && !status.audiences.as_ref().is_some_and(|audiences| audiences.contains(audience))
        {
            return Err(AuthError::Unauthenticated(format!("token rejected: it is not valid for audience {audience}")));
        }
        let user = status.user.unwrap_or_default();
        let node =
            user.extra.as_ref().and_then(|extra| extra.get(NODE_NAME_EXTRA)).and_then(|values| values.first()).cloned();
        Ok(ReviewedIdentity { username: user.username.unwrap_or_default(), node })
    }

    fn cached(&self, token: &str) -> Option<ReviewedIdentity> {
        let cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.get(token).filter(|(at, _)| at.elapsed() < CACHE_TTL).map(|(_, identity)| identity.clone())
    }

    fn remember(&self, token: &str, identity: &ReviewedIdentity) {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), (Instant::now(), identity.clone()));
    }
}

fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value =
        authorization.ok_or_else(|| AuthError::Unauthenticated("missing Authorization: Bearer <token>".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| AuthError::Unauthenticated("Authorization header is not of the form Bearer <token>".into()))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Unauthenticated("Authorization header is not of the form Bearer <token>".into()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_accepts_only_bearer() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
        assert!(matches!(bearer_token(None), Err(AuthError::Unauthenticated(_))));
        assert!(matches!(bearer_token(Some("Basic abc")), Err(AuthError::Unauthenticated(_))));
        assert!(matches!(bearer_token(Some("Bearer ")), Err(AuthError::Unauthenticated(_))));
    }
}
