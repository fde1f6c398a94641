//! `kubectl dbu`: a kubectl plugin that reads and steers one DovecotBackendUpgrade.

use dovecot_upgrade_operator::api::{DovecotBackendUpgrade, DovecotRing};
use dovecot_upgrade_operator::cli::{self, Verb};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Config};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inv = match cli::parse(&args) {
        Ok(inv) => inv,
        Err(usage) if usage == cli::USAGE => {
            println!("{usage}");
            return;
        }
        Err(problem) => {
            eprintln!("{problem}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(inv).await {
        eprintln!("kubectl dbu: {e}");
        std::process::exit(1);
    }
}

async fn run(inv: cli::Invocation) -> Result<(), String> {
    // kubectl passes its environment (KUBECONFIG) to plugins, not its flags
    let config = Config::infer().await.map_err(|e| e.to_string())?;
    let ns = inv
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    if inv.verb.on_ring() {
        return ring(client, &ns, &inv).await;
    }
    let api: Api<DovecotBackendUpgrade> = Api::namespaced(client, &ns);
    let dbu = api.get(&inv.name).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => {
            format!(
                "dovecotbackendupgrade {:?} not found in namespace {ns:?}",
                inv.name
            )
        }
        e => e.to_string(),
    })?;
    match &inv.verb {
        Verb::Status => print!("{}", cli::status_report(&dbu, Timestamp::now())),
        Verb::Plan => print!("{}", cli::plan_report(&dbu)?),
        verb => {
            let body = cli::patch(verb, &dbu, Timestamp::now())?;
            apply(&api, &inv.name, &body).await?;
            println!("{}", cli::done(verb, &inv.name));
        }
    }
    Ok(())
}

/// `kubectl dbu ring NAME` and `kubectl dbu ring-release NAME BACKEND`.
async fn ring(client: Client, ns: &str, inv: &cli::Invocation) -> Result<(), String> {
    let api: Api<DovecotRing> = Api::namespaced(client, ns);
    let ring = api.get(&inv.name).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => {
            format!("dovecotring {:?} not found in namespace {ns:?}", inv.name)
        }
        e => e.to_string(),
    })?;
    match &inv.verb {
        Verb::RingRelease(pod) => {
            let body = cli::ring_release_patch(&ring, pod, Timestamp::now())?;
            apply(&api, &inv.name, &body).await?;
            println!("{}", cli::done(&inv.verb, &inv.name));
        }
        _ => print!("{}", cli::ring_report(&ring)),
    }
    Ok(())
}

/// A merge patch as kubectl-dbu (its own field manager); the body carries the resourceVersion
/// read, so a change made meanwhile is a conflict to run again, never lost.
async fn apply<K>(api: &Api<K>, name: &str, body: &serde_json::Value) -> Result<(), String>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams {
        field_manager: Some("kubectl-dbu".into()),
        ..Default::default()
    };
    api.patch(name, &params, &Patch::Merge(body))
        .await
        .map(|_| ())
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => {
                format!("{name:?} changed while this was applied; run it again")
            }
            e => e.to_string(),
        })
}
