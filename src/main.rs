//! Command line wiring: `run` the controller, `plan` a DBU against the cluster, print the `crd`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use dovecot_upgrade_operator::api::DovecotBackendUpgrade;
use dovecot_upgrade_operator::machine::{self, Decision};
use dovecot_upgrade_operator::{controller, engine, http, metrics, settings};
use kube::CustomResourceExt;

#[derive(Parser)]
#[command(
    version,
    about = "Upgrades Dovecot backends one runbook walk at a time"
)]
struct Cli {
    /// Log format; json by default inside a cluster.
    #[arg(long, global = true, env = "LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the controller against the cluster of the kubeconfig (or in-cluster config).
    Run {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// Path of a kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster).
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
        /// Act only while holding the Lease, so that several replicas can run (HA).
        #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
        leader_elect: bool,
        /// Namespace of the Lease (default: the watched namespace, else "default").
        #[arg(long, env = "POD_NAMESPACE")]
        lease_namespace: Option<String>,
        /// This replica's name in the Lease (default: $POD_NAME, else host name and PID).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
        metrics_addr: std::net::SocketAddr,
        /// Honour `spec.reset.commands`. Off by default: whoever may write a DBU could otherwise
        /// run commands of their choice in every mail backend pod.
        #[arg(long, env = "ALLOW_CUSTOM_RESET_COMMANDS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        allow_custom_reset_commands: bool,
        /// Path of coreutils' `timeout` in the director and backend images: every command runs
        /// under it, so that one the operator gave up on is killed in the pod too and cannot
        /// land beside its retry. Empty: not bounded in the pod (images without `timeout`).
        #[arg(long, env = "IN_POD_TIMEOUT", default_value = "timeout")]
        in_pod_timeout: String,
        /// Relocate backends off nodes under maintenance (cordoned, or with a taint of
        /// `--maintenance-taints`) through the runbook, and keep a PodDisruptionBudget over
        /// every ring's backends so that an eviction never takes one by surprise. Needs get,
        /// list and watch on nodes (chart value nodeMaintenance.enabled).
        #[arg(long, env = "NODE_MAINTENANCE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        node_maintenance: bool,
        /// Taint keys (comma separated) that mark a node under maintenance besides a cordon,
        /// with the effect NoSchedule or NoExecute (e.g. an upgrade tool's).
        #[arg(long, env = "MAINTENANCE_TAINTS", default_value = "")]
        maintenance_taints: String,
        /// DBUs reconciled at once (each a pass of its steps; the others queue). Bounds the
        /// API connections and the memory a burst of DBUs takes; 0: unbounded.
        #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 10)]
        max_concurrent_reconciles: u16,
    },
    /// Print what a DBU would do against the cluster, executing nothing but read-only doveadm
    /// queries (director status, ring status): the ordered backends and every step's argv.
    Plan {
        /// The DovecotBackendUpgrade manifest (YAML or JSON).
        #[arg(short = 'f', long = "filename")]
        file: std::path::PathBuf,
        /// Namespace when the manifest has none (default: the kubeconfig's).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Path of a kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster).
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
        /// Print the plan as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the CustomResourceDefinitions' YAML (every one, as in crds/, or one kind).
    Crd {
        /// Only this one: `dbu` (DovecotBackendUpgrade) or `ring` (DovecotRing).
        #[arg(value_parser = ["dbu", "ring"])]
        kind: Option<String>,
    },
}

fn init_logs(format: Option<LogFormat>, default_level: &str) {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.unwrap_or(if in_cluster {
        LogFormat::Json
    } else {
        LogFormat::Text
    }) {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Crd { kind } => {
            let dbu = DovecotBackendUpgrade::crd();
            let ring = dovecot_upgrade_operator::api::DovecotRing::crd();
            let crds = match kind.as_deref() {
                Some("dbu") => vec![dbu],
                Some(_) => vec![ring],
                // the files of crds/, in their order there
                None => vec![dbu, ring],
            };
            let docs: Vec<String> = crds
                .iter()
                .map(serde_saphyr::to_string)
                .collect::<Result<_, _>>()?;
            print!("{}", docs.join("---\n"));
            Ok(())
        }
        Cmd::Plan {
            file,
            namespace,
            kubeconfig,
            json,
        } => {
            init_logs(cli.log_format, "warn");
            plan(&file, namespace, kubeconfig, json).await
        }
        Cmd::Run {
            namespace,
            kubeconfig,
            leader_elect,
            lease_namespace,
            identity,
            metrics_addr,
            allow_custom_reset_commands,
            in_pod_timeout,
            node_maintenance,
            maintenance_taints,
            max_concurrent_reconciles,
        } => {
            init_logs(cli.log_format, "info");
            if in_pod_timeout.is_empty() {
                tracing::warn!(
                    "--in-pod-timeout is empty: commands are not bounded inside the pods, and one this operator gave up on may still run beside its retry"
                );
            }
            let client = kube::Client::try_from(kube_config(kubeconfig).await?)?;
            let metrics = Arc::new(metrics::Metrics::new());
            let health = Arc::new(http::Health {
                metrics: metrics.clone(),
                ready: AtomicBool::new(false),
            });
            http::serve(metrics_addr, health.clone()).await?;
            {
                let client = client.clone();
                tokio::spawn(async move {
                    while client.apiserver_version().await.is_err() {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    health
                        .ready
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                });
            }
            tracing::info!(
                namespace = namespace.as_deref().unwrap_or("<all>"),
                "starting controller"
            );
            // the leader Lease and the ring locks live in the operator's own namespace
            let lock_namespace = lease_namespace
                .or_else(|| namespace.clone())
                .unwrap_or_else(|| "default".into());
            let election = leader_elect.then(|| controller::Election {
                namespace: lock_namespace.clone(),
                identity: identity.unwrap_or_else(|| {
                    let host =
                        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                    format!("{}-{}", host.trim(), std::process::id())
                }),
            });
            let opts = controller::Options {
                node_maintenance: node_maintenance
                    .then(|| dbu_core::maintenance::parse_taint_keys(&maintenance_taints))
                    .transpose()
                    .map_err(|e| format!("--maintenance-taints: {e}"))?,
                namespace,
                lock_namespace,
                policy: settings::Policy {
                    allow_custom_reset_commands,
                },
                in_pod_timeout: Some(in_pod_timeout).filter(|t| !t.is_empty()),
                concurrency: max_concurrent_reconciles,
            };
            controller::run_elected(client, opts, election, metrics).await?;
            Ok(())
        }
    }
}

async fn kube_config(
    kubeconfig: Option<std::path::PathBuf>,
) -> Result<kube::Config, Box<dyn std::error::Error>> {
    Ok(match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    })
}

/// `plan -f`: the dry run against the cluster, printed.
async fn plan(
    file: &std::path::Path,
    namespace: Option<String>,
    kubeconfig: Option<std::path::PathBuf>,
    json: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(file)?;
    let dbu: DovecotBackendUpgrade = serde_saphyr::from_str(&text)?;
    let s = settings::validate(&dbu.spec)?;
    let config = kube_config(kubeconfig).await?;
    let ns = dbu
        .metadata
        .namespace
        .clone()
        .or(namespace)
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config)?;
    // a DBU already applied contributes its in-flight records
    let live = kube::Api::<DovecotBackendUpgrade>::namespaced(client.clone(), &ns)
        .get_opt(&dbu.metadata.name.clone().unwrap_or_default())
        .await
        .ok()
        .flatten();
    let status = live.and_then(|d| d.status).unwrap_or_default();
    let stores = controller::Stores::list(&client, &ns).await?;
    let s = controller::bind_read_only(&stores, &dbu, &ns, s)?;
    let (cluster, exec) =
        controller::edges_for(&client, &stores, &dbu, &ns, &ns, Default::default());
    let now = k8s_openapi::jiff::Timestamp::now();
    let (decision, obs) = engine::dry_run_once(&s, &status, &exec, &cluster, now).await?;
    let Decision::DryRun(p) = decision else {
        let why = match &decision {
            Decision::Stall { reason, message } => format!("{reason}: {message}"),
            Decision::Wait {
                reason, message, ..
            } => format!("{reason}: {message}"),
            Decision::Complete => "every backend already runs the target revision".into(),
            other => format!("{other:?}"),
        };
        println!("nothing to plan: {why}");
        return Ok(());
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    println!("namespace {ns}, StatefulSet {}", s.stateful_set);
    let director = obs.director.as_deref().unwrap_or("<director>");
    println!("director commands run in {director}");
    let ring = obs.ring.clone().unwrap_or_default();
    let target = obs
        .sts
        .as_ref()
        .and_then(|x| x.update_revision.clone())
        .unwrap_or_default();
    let steps: Vec<_> = p
        .order
        .iter()
        .filter_map(|b| {
            let ip = b.ip.as_deref()?.parse().ok()?;
            let steps =
                machine::steps_for(&s, &obs, &ring, &target, &b.pod, ip, b.vhosts as u32, now);
            Some((b, steps))
        })
        .collect();
    let backends: Vec<_> = steps
        .iter()
        .map(|(b, steps)| dbu_core::control::BackendSteps {
            pod: &b.pod,
            ip: b.ip.as_deref(),
            steps,
        })
        .collect();
    print!("{}", dbu_core::control::plan_text(&p, &backends));
    Ok(())
}
