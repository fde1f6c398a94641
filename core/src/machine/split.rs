//! Whether the directors agree: the same hosts at the same vhosts and up/down on every director, and every director connected to every other; else what differs, naming the director.
//!
//! `director ring status` saying `ring synced` is not enough: a director pod that came back
//! at a new IP is refused by the others, and both sides call themselves synced while users
//! reaching them are hashed over two different host lists. No slot is granted and nothing is
//! stopped on such a ring.

use std::collections::BTreeMap;

use super::observed::Observed;
use crate::dovecot::{RingHost, RingMember};

/// What differs between the directors, one line per difference naming the director; empty
/// when they agree. Hosts in `changing` (backends out of the ring right now, whose change may
/// still be on its way around the ring) are not compared. Directors or views not read are
/// not judged here (the reads that need them wait for them).
pub fn differences(obs: &Observed, changing: &[&str]) -> Vec<String> {
    let first = obs.director.as_deref().zip(obs.ring.as_deref());
    let others = obs.other_rings.as_deref().unwrap_or_default();
    between(first, others, &obs.directors, &obs.ring_members, changing)
}

/// `differences` from the parts: the first director's view, the other directors' views, every
/// director's pod IP, and each one's `director ring status`.
pub fn between(
    first: Option<(&str, &[RingHost])>,
    others: &[(String, Option<Vec<RingHost>>)],
    directors: &[(String, Option<String>)],
    members: &[(String, Option<Vec<RingMember>>)],
    changing: &[&str],
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((first, base)) = first {
        let base = view(base, changing);
        for (name, hosts) in others {
            let Some(hosts) = hosts else { continue };
            let other = view(hosts, changing);
            for (ip, (vhosts, up)) in &base {
                match other.get(ip) {
                    None => out.push(format!("{name} has no host {ip} ({first} has)")),
                    Some(o) if o != &(*vhosts, *up) => out.push(format!(
                        "{name} shows {ip} at {} vhosts {}, {first} at {vhosts} {}",
                        o.0,
                        updown(o.1),
                        updown(*up)
                    )),
                    Some(_) => {}
                }
            }
            for ip in other.keys().filter(|ip| !base.contains_key(*ip)) {
                out.push(format!("{name} has host {ip}, which {first} has not"));
            }
        }
    }
    // every Ready director is connected to every other one
    for (name, members) in members {
        let Some(members) = members else { continue };
        for (other, ip) in directors {
            let Some(ip) = ip.as_deref() else { continue };
            if other == name {
                continue;
            }
            if !members.iter().any(|m| m.ip == ip && m.connected) {
                out.push(format!(
                    "{name} is not connected to director {other} ({ip}) in the ring"
                ));
            }
        }
    }
    out
}

fn updown(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

fn view<'a>(hosts: &'a [RingHost], changing: &[&str]) -> BTreeMap<&'a str, (u32, bool)> {
    hosts
        .iter()
        .filter(|h| !changing.contains(&h.ip.as_str()))
        .map(|h| (h.ip.as_str(), (h.vhosts, h.up)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::host;

    fn two_directors() -> Observed {
        let ring = vec![host(0, 100, true, 3), host(1, 50, true, 2)];
        let m = |ip: &str| RingMember {
            ip: ip.into(),
            connected: true,
        };
        Observed {
            director: Some("director-0".into()),
            directors: vec![
                ("director-0".into(), Some("10.0.9.1".into())),
                ("director-1".into(), Some("10.0.9.2".into())),
            ],
            ring: Some(ring.clone()),
            other_rings: Some(vec![("director-1".into(), Some(ring))]),
            ring_members: vec![
                (
                    "director-0".into(),
                    Some(vec![m("10.0.9.1"), m("10.0.9.2")]),
                ),
                (
                    "director-1".into(),
                    Some(vec![m("10.0.9.2"), m("10.0.9.1")]),
                ),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn directors_that_agree_show_no_difference() {
        assert_eq!(differences(&two_directors(), &[]), Vec::<String>::new());
        // unread views are not judged here
        let mut o = two_directors();
        o.other_rings = Some(vec![("director-1".into(), None)]);
        o.ring_members[1].1 = None;
        assert_eq!(differences(&o, &[]), Vec::<String>::new());
    }

    #[test]
    fn a_split_ring_is_named_by_director_and_difference() {
        let ip0 = host(0, 0, true, 0).ip;
        let ip1 = host(1, 0, true, 0).ip;
        // the director that came back at a new IP: its view lacks a host, has an old one, and
        // shows another at a different count; the other director refused it
        let mut o = two_directors();
        o.other_rings = Some(vec![(
            "director-1".into(),
            Some(vec![host(1, 100, true, 0), host(7, 0, true, 0)]),
        )]);
        o.directors[1].1 = Some("10.0.9.3".into());
        o.ring_members[0].1 = Some(vec![
            RingMember {
                ip: "10.0.9.1".into(),
                connected: true,
            },
            RingMember {
                ip: "10.0.9.2".into(),
                connected: false,
            },
        ]);
        let d = differences(&o, &[]);
        let ip7 = host(7, 0, true, 0).ip;
        assert_eq!(
            d,
            vec![
                format!("director-1 has no host {ip0} (director-0 has)"),
                format!("director-1 shows {ip1} at 100 vhosts up, director-0 at 50 up"),
                format!("director-1 has host {ip7}, which director-0 has not"),
                "director-0 is not connected to director director-1 (10.0.9.3) in the ring".into(),
            ]
        );
        // the change in progress (a backend going out) is not a difference
        let mut o = two_directors();
        o.other_rings = Some(vec![(
            "director-1".into(),
            Some(vec![host(0, 100, true, 3), host(1, 0, true, 2)]),
        )]);
        assert_eq!(differences(&o, &[ip1.as_str()]), Vec::<String>::new());
        assert_eq!(differences(&o, &[]).len(), 1);
    }
}
