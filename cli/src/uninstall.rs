//! `palisade uninstall`: the chart's pre-delete hook. Removes every Palisade chain, rule and set
//! from every node, and nothing else.
//!
//! An agent that stops leaves its rules in force (fail-static), so an upgrade or a restart never
//! opens a node; removal is therefore a separate, explicit step, and its order matters:
//! 1. the agent DaemonSet goes first, and its pods must be gone, or a running agent would repair
//!    what the cleanup removes;
//! 2. a cleanup DaemonSet, cloned from the agent's pod template (same image, host network,
//!    capabilities, tolerations and node selection, so it lands on every node the agent did), runs
//!    `palisade agent cleanup` as an init container, then holds; a ready pod is a cleaned node;
//! 3. once every scheduled pod is ready, the cleanup DaemonSet is deleted.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Kubeconfig file; without it, the in-cluster ServiceAccount (or $KUBECONFIG) is used.
    #[arg(long, env = "PALISADE_KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,

    /// Namespace of the agent DaemonSet (normally the hook's own, from the downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,

    /// Name of the agent DaemonSet.
    #[arg(long, env = "PALISADE_AGENT_DAEMONSET")]
    agent_daemonset: String,

    /// Seconds to wait for each step (agents gone, every node cleaned) before failing.
    #[arg(long, env = "PALISADE_UNINSTALL_TIMEOUT_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout_seconds: u64,
}

const POLL: Duration = Duration::from_millis(500);

pub async fn run(args: UninstallArgs) -> anyhow::Result<()> {
    let client = palisade_operator::client(args.kubeconfig.as_deref()).await?;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &args.namespace);
    let pods: Api<Pod> = Api::namespaced(client, &args.namespace);
    let timeout = Duration::from_secs(args.timeout_seconds);
    let cleanup_name = format!("{}-cleanup", args.agent_daemonset);

    let Some(agent) = daemonsets.get_opt(&args.agent_daemonset).await.context("reading the agent DaemonSet")? else {
        println!("no DaemonSet {}/{}: nothing to stop", args.namespace, args.agent_daemonset);
        return Ok(());
    };
    let agent_selector = selector_of(&agent).context("the agent DaemonSet has no matchLabels selector")?;
    let cleanup = cleanup_daemonset(&agent, &cleanup_name)?;

    // 1. The agents stop; their rules stay until the cleanup removes them.
    daemonsets
        .delete(&args.agent_daemonset, &DeleteParams::foreground())
        .await
        .context("deleting the agent DaemonSet")?;
    wait(timeout, "the agent pods to be gone", || async {
        Ok(pods.list(&ListParams::default().labels(&agent_selector)).await?.items.is_empty())
    })
    .await?;
    println!("agents stopped");

    // 2. One cleanup pod per node the agents ran on.
    if daemonsets.get_opt(&cleanup_name).await?.is_some() {
        daemonsets.delete(&cleanup_name, &DeleteParams::default()).await?;
        wait(timeout, "an earlier cleanup DaemonSet to be gone", || async {
            Ok(daemonsets.get_opt(&cleanup_name).await?.is_none())
        })
        .await?;
    }
    daemonsets.create(&PostParams::default(), &cleanup).await.context("creating the cleanup DaemonSet")?;
    wait(timeout, "every node to be cleaned", || async {
        let Some(current) = daemonsets.get_opt(&cleanup_name).await? else { bail!("the cleanup DaemonSet vanished") };
        let generation = current.metadata.generation.unwrap_or(0);
        let Some(status) = current.status else { return Ok(false) };
        Ok(status.observed_generation.unwrap_or(0) >= generation
            && status.number_ready == status.desired_number_scheduled
            && status.updated_number_scheduled.unwrap_or(0) == status.desired_number_scheduled)
    })
    .await?;
    let cleaned = daemonsets.get(&cleanup_name).await?.status.map_or(0, |status| status.number_ready);
    println!("{cleaned} nodes cleaned");

    // 3. Done.
    daemonsets.delete(&cleanup_name, &DeleteParams::foreground()).await.context("deleting the cleanup DaemonSet")?;
    Ok(())
}

/// `key=value,...` of the DaemonSet's `matchLabels`.
fn selector_of(daemonset: &DaemonSet) -> Option<String> {
    let labels = daemonset.spec.as_ref()?.selector.match_labels.as_ref()?;
    Some(labels.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join(","))
}

/// The agent's DaemonSet made into the cleanup's: its own name and component label (so it selects
/// only its own pods), the agent container run as `agent cleanup` first, then as `agent cleanup
/// --hold`, without the agent's probes.
fn cleanup_daemonset(agent: &DaemonSet, name: &str) -> anyhow::Result<DaemonSet> {
    let mut spec = agent.spec.clone().context("the agent DaemonSet has no spec")?;
    let component = ("app.kubernetes.io/component".to_owned(), "agent-cleanup".to_owned());
    let mut match_labels = spec.selector.match_labels.clone().unwrap_or_default();
    match_labels.insert(component.0.clone(), component.1.clone());
    spec.selector.match_labels = Some(match_labels.clone());
    let mut template = spec.template;
    let metadata = template.metadata.get_or_insert_with(Default::default);
    let mut labels = metadata.labels.clone().unwrap_or_default();
    labels.extend(match_labels.clone());
    metadata.labels = Some(labels);
    let pod = template.spec.as_mut().context("the agent DaemonSet has no pod spec")?;
    let Some(agent_container) = pod.containers.first().cloned() else {
        bail!("the agent pod template has no container")
    };
    let mut clean = agent_container.clone();
    clean.name = "cleanup".into();
    clean.args = Some(vec!["agent".into(), "cleanup".into()]);
    clean.readiness_probe = None;
    clean.liveness_probe = None;
    clean.ports = None;
    let mut hold = clean.clone();
    hold.name = "cleaned".into();
    hold.args = Some(vec!["agent".into(), "cleanup".into(), "--hold".into()]);
    pod.init_containers = Some(vec![clean]);
    pod.containers = vec![hold];
    spec.template = template;
    spec.update_strategy = None;
    let mut object_labels = agent.metadata.labels.clone().unwrap_or_default();
    object_labels.insert(component.0, component.1);
    Ok(DaemonSet {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: agent.metadata.namespace.clone(),
            labels: Some(object_labels),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

async fn wait<F, Fut>(timeout: Duration, what: &str, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match done().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "waiting for {what}"),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_cleanup_daemonset_selects_only_its_own_pods_and_cleans_before_it_is_ready() {
        let agent: DaemonSet = serde_json::from_value(json!({
            "metadata": { "name": "p-agent", "namespace": "palisade", "labels": { "app.kubernetes.io/name": "palisade" } },
            "spec": {
                "selector": { "matchLabels": { "app.kubernetes.io/name": "palisade", "app.kubernetes.io/component": "agent" } },
                "template": {
                    "metadata": { "labels": { "app.kubernetes.io/name": "palisade", "app.kubernetes.io/component": "agent" } },
                    "spec": {
                        "hostNetwork": true,
                        "containers": [{
                            "name": "agent", "image": "palisade:dev", "args": ["agent", "run"],
                            "readinessProbe": { "httpGet": { "path": "/readyz", "port": 9102 } },
                            "securityContext": { "capabilities": { "add": ["NET_ADMIN", "NET_RAW"] } }
                        }]
                    }
                }
            }
        }))
        .expect("agent DaemonSet");
        let cleanup = cleanup_daemonset(&agent, "p-agent-cleanup").expect("cleanup");
        let spec = cleanup.spec.expect("spec");
        let selector = spec.selector.match_labels.expect("labels");
        assert_eq!(selector["app.kubernetes.io/component"], "agent-cleanup");
        let template_labels = spec.template.metadata.expect("metadata").labels.expect("labels");
        assert_eq!(template_labels["app.kubernetes.io/component"], "agent-cleanup");
        let pod = spec.template.spec.expect("pod");
        assert_eq!(pod.host_network, Some(true));
        let init = &pod.init_containers.expect("init")[0];
        assert_eq!(init.args.as_deref(), Some(&["agent".to_owned(), "cleanup".to_owned()][..]));
        assert!(init.readiness_probe.is_none());
        assert_eq!(
            init.security_context,
            agent.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].security_context
        );
        assert_eq!(pod.containers[0].args.as_ref().map(|a| a.join(" ")).as_deref(), Some("agent cleanup --hold"));
        assert_eq!(
            selector_of(&agent).as_deref(),
            Some("app.kubernetes.io/component=agent,app.kubernetes.io/name=palisade")
        );
    }
}
