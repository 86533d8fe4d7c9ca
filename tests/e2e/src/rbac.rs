//! ServiceAccounts and RBAC for the operator and the agents, with exactly the verbs each needs,
//! so every run also checks that the roles we document are enough (the apiserver runs RBAC only).

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::cluster::from_json;
use crate::error::{Error, Result};

pub const OPERATOR_ACCOUNT: &str = "palisade-operator";
pub const AGENT_ACCOUNT: &str = "palisade-agent";

/// The operator's cluster-wide needs: watch what the engine indexes, write status on both policy
/// kinds, review agent tokens, record Events.
pub fn operator_cluster_rules() -> serde_json::Value {
    json!([
        { "apiGroups": [""], "resources": ["pods", "namespaces", "nodes"], "verbs": ["list", "watch"] },
        { "apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"] },
        { "apiGroups": ["policy.networking.k8s.io"], "resources": ["clusternetworkpolicies"], "verbs": ["list", "watch"] },
        { "apiGroups": ["policy.networking.k8s.io"], "resources": ["clusternetworkpolicies/status"], "verbs": ["patch"] },
        // Server-side apply of a PolicyStatus that does not exist yet is a create.
        { "apiGroups": ["palisade.dev"], "resources": ["policystatuses"], "verbs": ["list", "watch", "create", "patch", "delete"] },
        { "apiGroups": ["palisade.dev"], "resources": ["policystatuses/status"], "verbs": ["patch"] },
        { "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"] },
        { "apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"] },
    ])
}

/// The Lease and the per-node realization ConfigMaps, in the operator's own namespace only.
pub fn operator_namespace_rules() -> serde_json::Value {
    json!([
        { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "patch", "update", "delete"] },
        // Server-side apply of a ConfigMap that does not exist yet is a create.
        { "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch", "delete"] },
    ])
}

/// Creates both ServiceAccounts, the operator's ClusterRole and Role with their bindings. The
/// agents get no role at all: they talk only to the operator, which checks their tokens.
pub async fn install(client: &Client, namespace: &str, suffix: &str) -> Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    for name in [OPERATOR_ACCOUNT, AGENT_ACCOUNT] {
        let account: ServiceAccount = from_json(json!({ "metadata": { "name": name } }))?;
        accounts.create(&PostParams::default(), &account).await?;
    }
    let subject = json!([{ "kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": namespace }]);
    let cluster_role_name = format!("palisade-operator-{suffix}");
    let cluster_role: ClusterRole =
        from_json(json!({ "metadata": { "name": cluster_role_name }, "rules": operator_cluster_rules() }))?;
    Api::<ClusterRole>::all(client.clone()).create(&PostParams::default(), &cluster_role).await?;
    let binding: ClusterRoleBinding = from_json(json!({
        "metadata": { "name": cluster_role_name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role_name },
        "subjects": subject,
    }))?;
    Api::<ClusterRoleBinding>::all(client.clone()).create(&PostParams::default(), &binding).await?;
    let role: Role =
        from_json(json!({ "metadata": { "name": "palisade-operator-lease" }, "rules": operator_namespace_rules() }))?;
    Api::<Role>::namespaced(client.clone(), namespace).create(&PostParams::default(), &role).await?;
    let role_binding: RoleBinding = from_json(json!({
        "metadata": { "name": "palisade-operator-lease" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "palisade-operator-lease" },
        "subjects": subject,
    }))?;
    Api::<RoleBinding>::namespaced(client.clone(), namespace).create(&PostParams::default(), &role_binding).await?;
    Ok(())
}

/// A token for ServiceAccount `namespace/account` via TokenRequest; with `bound_pod` it is bound
/// to that pod (name, uid), which is what puts the pod's node into the TokenReview.
pub async fn token(client: &Client, namespace: &str, account: &str, bound_pod: Option<(&str, &str)>) -> Result<String> {
    let mut spec = json!({ "audiences": [], "expirationSeconds": 7200 });
    if let Some((name, uid)) = bound_pod {
        spec["boundObjectRef"] = json!({ "apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid });
    }
    let request: TokenRequest = from_json(json!({ "spec": spec }))?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let issued: TokenRequest = accounts.create_subresource("token", account, &PostParams::default(), &request).await?;
    issued.status.map(|status| status.token).ok_or_else(|| Error::Setup("TokenRequest returned no status".into()))
}
