//! The engine's own reads from the directors (the ring, its sync state): read-only doveadm
//! queries, each failure logged and read as "unknown".

use dbu_core::dovecot;
use dbu_core::settings::Settings;

use crate::exec::{ExecRequest, PodExec};

/// stdout of a read-only doveadm query on the director, or None (logged) when it failed.
pub(crate) async fn director_query(
    s: &Settings,
    exec: &dyn PodExec,
    director: &str,
    argv: Vec<String>,
) -> Option<String> {
    let what = argv.join(" ");
    match exec
        .exec(ExecRequest {
            pod: director,
            container: s.director_container.as_deref(),
            argv: &argv,
            timeout: s.command_timeout,
        })
        .await
    {
        Ok(out) if out.exit_code == 0 => Some(out.stdout),
        Ok(out) => {
            tracing::warn!(director, command = %what, exit_code = out.exit_code, stderr = %dbu_core::text::bounded(&out.stderr, 300), "director query failed");
            None
        }
        Err(e) => {
            tracing::warn!(director, command = %what, error = %e, "director query exec failed");
            None
        }
    }
}

/// Whether the director ring says it is synced (unreadable counts as not synced), and the
/// directors it names (None: unreadable).
pub(crate) async fn read_ring_status(
    s: &Settings,
    exec: &dyn PodExec,
    director: &str,
) -> (bool, Option<Vec<dovecot::RingMember>>) {
    let Some(out) = director_query(s, exec, director, s.director.director_ring_status()).await
    else {
        return (false, None);
    };
    (
        dovecot::parse_ring_synced(&out).unwrap_or(false),
        dovecot::parse_ring_members(&out)
            .map_err(|e| tracing::warn!(director, error = %e, "director ring status unparsable"))
            .ok(),
    )
}

/// Reads `director status` from the chosen director.
pub(crate) async fn read_ring(
    s: &Settings,
    exec: &dyn PodExec,
    director: &str,
) -> Option<Vec<dovecot::RingHost>> {
    let out = director_query(s, exec, director, s.director.director_status()).await?;
    dovecot::parse_director_status(&out)
        .map_err(|e| tracing::warn!(director, error = %e, "director status unparsable"))
        .ok()
}
