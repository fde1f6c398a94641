//! Which DovecotRing a DBU belongs to: by name, through its StatefulSet, or (for manifests from before rings) through its directors; conflicts refused naming both.
//!
//! The ring is the resource, never a selector's text: two rings that share a StatefulSet or a
//! director pod would let two backends of one director ring out at once, so a DBU of either
//! is refused until a human merges them. A ring the operator created for manifests from before
//! rings is folded into the ring a human declares for the same directors (its record of who is
//! out moves over first).

use std::collections::BTreeSet;

/// A DovecotRing as resolution sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RingView {
    pub name: String,
    /// `spec.backends[].statefulSet`.
    pub backends: Vec<String>,
    /// Pods its director selector picks now.
    pub directors: Vec<String>,
    /// Its director selector as a canonical query string: two rings selecting alike are one
    /// ring even while no director pod exists.
    pub selector: String,
    /// Created by the operator for a DBU without `spec.ring` (it may add StatefulSets to it).
    pub auto: bool,
}

/// The DBU's side: what it names, and for one without `spec.ring`, its own directors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeker<'a> {
    /// `spec.ring`.
    pub named: Option<&'a str>,
    pub stateful_set: &'a str,
    /// With `spec.director` and no `spec.ring`: the name a ring created for it gets, and the
    /// pods its selector picks now.
    pub legacy: Option<(&'a str, &'a [String])>,
}

/// Where resolution leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The DBU belongs to this ring.
    Ring(String),
    /// Add the StatefulSet to this ring the operator created (its directors are the DBU's).
    Join(String),
    /// Create a ring of this name from the DBU's `spec.director` and StatefulSet.
    Create(String),
    /// Refused until a ring or the DBU changes: why, in words that say what to change.
    Refused(String),
    /// Move the record of ring `from` (the operator created it) into `into` (a human declared
    /// it for the same directors or StatefulSets), then delete `from`.
    Absorb { from: String, into: String },
}

/// Whether two rings are one director ring: a common director pod, or the same selector.
fn same_ring(a: &RingView, b: &RingView) -> bool {
    a.directors.iter().any(|p| b.directors.contains(p))
        || (!a.selector.is_empty() && a.selector == b.selector)
}

/// The ring a DBU belongs to, or what to do or change first.
/// The declared ring each ring the operator created folds into (by name, the first that
/// selects the same directors or lists one of its StatefulSets).
fn folds(rings: &[RingView]) -> Vec<(&str, &str)> {
    let mut sorted: Vec<&RingView> = rings.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
        .iter()
        .filter(|r| r.auto)
        .filter_map(|from| {
            let into = sorted.iter().filter(|r| !r.auto).find(|d| {
                same_ring(from, d) || from.backends.iter().any(|b| d.backends.contains(b))
            })?;
            Some((from.name.as_str(), into.name.as_str()))
        })
        .collect()
}

/// The rings the operator created that fold into declared ring `into`.
pub fn folded_into<'a>(into: &str, rings: &'a [RingView]) -> Vec<&'a str> {
    folds(rings)
        .into_iter()
        .filter(|(_, i)| *i == into)
        .map(|(f, _)| f)
        .collect()
}

pub fn resolve(dbu: &Seeker, rings: &[RingView]) -> Resolved {
    if let Some((from, into)) = folds(rings).first() {
        return Resolved::Absorb {
            from: from.to_string(),
            into: into.to_string(),
        };
    }
    let sts = dbu.stateful_set;
    let listing: Vec<&RingView> = rings
        .iter()
        .filter(|r| r.backends.iter().any(|b| b == sts))
        .collect();
    if listing.len() > 1 {
        return Resolved::Refused(format!(
            "StatefulSet {sts} is a backend of {}: a StatefulSet belongs to one ring; remove it from all but one",
            both(&listing)
        ));
    }
    let ring = match (dbu.named, listing.first()) {
        (Some(n), _) => match rings.iter().find(|r| r.name == n) {
            None => {
                return Resolved::Refused(format!(
                    "DovecotRing {n} (spec.ring) does not exist in this namespace; apply it"
                ));
            }
            Some(r) if !r.backends.iter().any(|b| b == sts) => {
                return Resolved::Refused(match listing.first() {
                    Some(other) => format!(
                        "spec.ring names DovecotRing {n}, but StatefulSet {sts} is a backend of DovecotRing {}; name that one, or move the StatefulSet",
                        other.name
                    ),
                    None => format!(
                        "StatefulSet {sts} is not a backend of DovecotRing {n}: add `- statefulSet: {sts}` to its spec.backends"
                    ),
                });
            }
            Some(r) => r,
        },
        (None, Some(r)) => r,
        (None, None) => return legacy(dbu, rings),
    };
    match overlapping(ring, rings) {
        Some(refused) => refused,
        None => Resolved::Ring(ring.name.clone()),
    }
}

/// A DBU without `spec.ring` whose StatefulSet no ring lists: the ring its directors are in.
fn legacy(dbu: &Seeker, rings: &[RingView]) -> Resolved {
    let sts = dbu.stateful_set;
    let Some((auto_name, pods)) = dbu.legacy else {
        return Resolved::Refused(format!(
            "no DovecotRing lists StatefulSet {sts}: set spec.ring, or add `- statefulSet: {sts}` to a ring's spec.backends"
        ));
    };
    let sharing: Vec<&RingView> = rings
        .iter()
        .filter(|r| r.directors.iter().any(|p| pods.contains(p)) || r.name == auto_name)
        .collect();
    match sharing.as_slice() {
        [] => Resolved::Create(auto_name.to_string()),
        [r] if r.auto => match overlapping(r, rings) {
            Some(refused) => refused,
            None => Resolved::Join(r.name.clone()),
        },
        [r] => Resolved::Refused(format!(
            "spec.director.selector picks directors of DovecotRing {}, which does not list StatefulSet {sts}: add `- statefulSet: {sts}` to its spec.backends, or set spec.ring",
            r.name
        )),
        many => Resolved::Refused(format!(
            "spec.director.selector picks directors of {}: set spec.ring to the one StatefulSet {sts} belongs to",
            both(many)
        )),
    }
}

/// Why ring `name` cannot stand as declared: another ring lists one of its StatefulSets, or
/// selects the same directors (None: it stands).
pub fn conflict(name: &str, rings: &[RingView]) -> Option<String> {
    let ring = rings.iter().find(|r| r.name == name)?;
    for sts in &ring.backends {
        let listing: Vec<&RingView> = rings.iter().filter(|r| r.backends.contains(sts)).collect();
        if listing.len() > 1 {
            return Some(format!(
                "StatefulSet {sts} is a backend of {}: a StatefulSet belongs to one ring; remove it from all but one",
                both(&listing)
            ));
        }
    }
    match overlapping(ring, rings) {
        Some(Resolved::Refused(why)) => Some(why),
        _ => None,
    }
}

/// A refusal when another ring shares a director pod with `ring` (two rings of one director
/// ring would each let a backend out).
fn overlapping(ring: &RingView, rings: &[RingView]) -> Option<Resolved> {
    let mine: BTreeSet<&String> = ring.directors.iter().collect();
    let other = rings
        .iter()
        .filter(|r| r.name != ring.name)
        .find(|r| same_ring(ring, r))?;
    let mut common: Vec<&str> = other
        .directors
        .iter()
        .filter(|p| mine.contains(p))
        .map(String::as_str)
        .collect();
    if common.is_empty() {
        common.push(&ring.selector);
    }
    let (a, b) = if ring.name <= other.name {
        (&ring.name, &other.name)
    } else {
        (&other.name, &ring.name)
    };
    Some(Resolved::Refused(format!(
        "DovecotRing {a} and DovecotRing {b} select the same directors ({}): they are one director ring; merge them into one",
        common.join(", ")
    )))
}

fn both(rings: &[&RingView]) -> String {
    let mut names: Vec<String> = rings
        .iter()
        .map(|r| format!("DovecotRing {}", r.name))
        .collect();
    names.sort();
    names.join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(name: &str, backends: &[&str], directors: &[&str], auto: bool) -> RingView {
        RingView {
            name: name.into(),
            backends: backends.iter().map(|s| s.to_string()).collect(),
            directors: directors.iter().map(|s| s.to_string()).collect(),
            // every ring selects differently unless a test says otherwise
            selector: format!("ring={name}"),
            auto,
        }
    }

    #[test]
    fn resolution_table() {
        let d = ["director-0".to_string(), "director-1".to_string()];
        let named = |n| Seeker {
            named: Some(n),
            stateful_set: "backend",
            legacy: None,
        };
        let found = Seeker {
            named: None,
            stateful_set: "backend",
            legacy: None,
        };
        let old = Seeker {
            named: None,
            stateful_set: "backend",
            legacy: Some(("dbu-ring-1", &d)),
        };
        let mail = ring(
            "mail",
            &["backend", "backend-b"],
            &["director-0", "director-1"],
            false,
        );
        let cases: Vec<(&str, Seeker, Vec<RingView>, Resolved)> = vec![
            (
                "named",
                named("mail"),
                vec![mail.clone()],
                Resolved::Ring("mail".into()),
            ),
            (
                "found through its StatefulSet",
                found.clone(),
                vec![mail.clone(), ring("other", &["x"], &["d-9"], false)],
                Resolved::Ring("mail".into()),
            ),
            (
                "legacy manifest, its StatefulSet listed: the ring wins over its directors",
                old.clone(),
                vec![mail.clone()],
                Resolved::Ring("mail".into()),
            ),
            (
                "legacy manifest, no ring: one is created",
                old.clone(),
                vec![ring("other", &["x"], &["d-9"], false)],
                Resolved::Create("dbu-ring-1".into()),
            ),
            (
                "legacy manifest, a ring the operator created for the same directors: join it",
                old.clone(),
                vec![ring("dbu-ring-1", &["backend-b"], &["director-1"], true)],
                Resolved::Join("dbu-ring-1".into()),
            ),
            (
                "legacy manifest, the created ring's name but no director pod yet: join it",
                old.clone(),
                vec![ring("dbu-ring-1", &["backend-b"], &[], true)],
                Resolved::Join("dbu-ring-1".into()),
            ),
            (
                "legacy manifest, a human's ring for those directors: never edited",
                old.clone(),
                vec![ring("zone-a", &["backend-b"], &["director-0"], false)],
                Resolved::Refused("spec.director.selector picks directors of DovecotRing zone-a, which does not list StatefulSet backend: add `- statefulSet: backend` to its spec.backends, or set spec.ring".into()),
            ),
        ];
        let absorb = |from: &str, into: &str| Resolved::Absorb {
            from: from.into(),
            into: into.into(),
        };
        let mut alike = ring("zone", &["x"], &[], false);
        alike.selector = "ring=dbu-ring-1".into();
        let cases = cases.into_iter().chain([
            (
                "a human declares the ring the operator created: its record moves over first",
                old.clone(),
                vec![
                    ring("dbu-ring-1", &["backend"], &["director-0"], true),
                    ring("mail", &["backend"], &["director-0", "director-1"], false),
                ],
                absorb("dbu-ring-1", "mail"),
            ),
            (
                "... also when it lists the StatefulSet for other directors",
                found.clone(),
                vec![
                    ring("dbu-ring-1", &["backend"], &["d-9"], true),
                    ring("mail", &["backend"], &["director-0"], false),
                ],
                absorb("dbu-ring-1", "mail"),
            ),
            (
                "... and while no director pod exists, by its selector",
                named("mail"),
                vec![ring("dbu-ring-1", &["y"], &[], true), mail.clone(), {
                    let mut r = ring("zzz", &["z"], &[], false);
                    r.selector = "ring=dbu-ring-1".into();
                    r
                }],
                absorb("dbu-ring-1", "zzz"),
            ),
            (
                "two declared rings that select alike, without a pod: refused",
                Seeker {
                    named: None,
                    stateful_set: "x",
                    legacy: None,
                },
                vec![alike, {
                    let mut r = ring("all", &["y"], &[], false);
                    r.selector = "ring=dbu-ring-1".into();
                    r
                }],
                Resolved::Refused("DovecotRing all and DovecotRing zone select the same directors (ring=dbu-ring-1): they are one director ring; merge them into one".into()),
            ),
        ]);
        for (why, seeker, rings, want) in cases {
            assert_eq!(resolve(&seeker, &rings), want, "{why}");
        }
    }

    #[test]
    fn a_ring_knows_when_it_is_declared_twice() {
        let rings = [
            ring("a", &["backend"], &["d-0"], false),
            ring("b", &["backend"], &["d-1"], false),
            ring("c", &["other"], &["d-0"], false),
            ring("d", &["mx"], &["d-9"], false),
        ];
        assert!(
            conflict("a", &rings)
                .unwrap()
                .contains("DovecotRing a and DovecotRing b")
        );
        assert!(
            conflict("c", &rings)
                .unwrap()
                .contains("DovecotRing a and DovecotRing c select the same directors (d-0)")
        );
        assert_eq!(conflict("d", &rings), None);
        assert_eq!(conflict("nope", &rings), None);
        // rings the operator created fold into the declared one of their directors
        let rings = [
            ring("dbu-ring-1", &["x"], &["d-0"], true),
            ring("dbu-ring-2", &["backend"], &["d-7"], true),
            ring("dbu-ring-3", &["y"], &["d-8"], true),
            ring("mail", &["backend"], &["d-0", "d-1"], false),
        ];
        assert_eq!(
            folded_into("mail", &rings),
            vec!["dbu-ring-1", "dbu-ring-2"]
        );
        assert_eq!(folded_into("dbu-ring-3", &rings), Vec::<&str>::new());
    }

    #[test]
    fn refusals_name_both_rings() {
        let refused = |s: &Seeker, rings: &[RingView]| match resolve(s, rings) {
            Resolved::Refused(m) => m,
            other => panic!("{other:?}"),
        };
        let found = Seeker {
            named: None,
            stateful_set: "backend",
            legacy: None,
        };
        // a StatefulSet in two rings
        let m = refused(
            &found,
            &[
                ring("a", &["backend"], &["d-0"], false),
                ring("b", &["backend"], &["d-1"], false),
            ],
        );
        assert!(
            m.contains("DovecotRing a and DovecotRing b") && m.contains("StatefulSet backend"),
            "{m}"
        );
        // two rings whose director selectors (written differently) pick a common pod
        let m = refused(
            &found,
            &[
                ring("zone-a", &["backend"], &["director-0", "director-1"], false),
                ring("all", &["backend-b"], &["director-1", "director-2"], false),
            ],
        );
        assert!(
            m.contains("DovecotRing all and DovecotRing zone-a") && m.contains("(director-1)"),
            "{m}"
        );
        // named, but the StatefulSet is elsewhere or nowhere, or the ring is missing
        let named = Seeker {
            named: Some("a"),
            ..found.clone()
        };
        let m = refused(
            &named,
            &[
                ring("a", &["x"], &["d-0"], false),
                ring("b", &["backend"], &["d-1"], false),
            ],
        );
        assert!(m.contains("DovecotRing b; name that one"), "{m}");
        let m = refused(&named, &[ring("a", &["x"], &["d-0"], false)]);
        assert!(m.contains("add `- statefulSet: backend`"), "{m}");
        let m = refused(&named, &[]);
        assert!(
            m.contains("DovecotRing a (spec.ring) does not exist"),
            "{m}"
        );
        // no ring, no directors of its own
        let m = refused(&found, &[]);
        assert!(m.contains("set spec.ring"), "{m}");
        // a legacy manifest whose directors are in two rings
        let d = ["director-0".to_string(), "director-1".to_string()];
        let old = Seeker {
            legacy: Some(("dbu-ring-1", &d)),
            ..found
        };
        let m = refused(
            &old,
            &[
                ring("a", &["x"], &["director-0"], true),
                ring("b", &["y"], &["director-1"], true),
            ],
        );
        assert!(m.contains("DovecotRing a and DovecotRing b"), "{m}");
    }
}
