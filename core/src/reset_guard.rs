//! The reset guard: which paths a reset command would delete, and whether they hold mail data.
//!
//! The runbook's `rm -rf /var/dovecot/vmail/*` assumes that folder holds only cache. Two checks
//! make sure before anything is deleted: the backend's settings (the mail location, `CONTROL=`,
//! `INBOX=`, `ALT=`, `INDEXPVT=` and the home must not be under a reset path; `INDEX=` and
//! `VOLATILEDIR=` are cache and may go), and what the paths hold (no Maildir, uidlist, keywords,
//! subscriptions, sieve scripts or duplicate database may be among what would be deleted).

use crate::api::MailLayout;
use crate::dovecot;

/// A directory that holds mail or mail metadata, and the setting that put it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    pub path: String,
    pub setting: String,
    /// The path is only the literal start of a template (`/srv/mail` of `/srv/mail/%u`): it
    /// stands for everything under it.
    pub template: bool,
}

/// What one reset command would delete: a directory tree, or every path starting with a string
/// (the literal start of a `find -path` pattern or of a glob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: String,
    pub prefix: bool,
}

/// A reset command that would delete mail data: what, and why it is mail data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub argv: Vec<String>,
    pub target: String,
    pub protected: Protected,
}

impl Refusal {
    pub fn message(&self, user: &str) -> String {
        let p = &self.protected;
        let what = if p.template {
            format!("{} (from {})", p.path, p.setting)
        } else {
            format!("{} ({} of {user})", p.path, p.setting)
        };
        format!(
            "reset path {} would delete {what}; nothing was deleted. Keep mail, CONTROL= and the home on the shared store and only INDEX= on the per-pod volume, or change spec.reset",
            self.target
        )
    }
}

/// `a/./b/../c` and `//` folded, no trailing slash: paths are compared as text.
fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn is_glob(c: char) -> bool {
    matches!(c, '*' | '?' | '[')
}

/// An absolute path argument as a target: a glob stands for everything starting like it.
fn target_of(arg: &str) -> Option<Target> {
    if !arg.starts_with('/') {
        return None;
    }
    match arg.find(is_glob) {
        Some(i) => Some(Target {
            path: arg[..i].to_string(),
            prefix: true,
        }),
        None => Some(Target {
            path: normalize(arg),
            prefix: false,
        }),
    }
}

fn is_find(argv: &[String]) -> bool {
    argv.first()
        .is_some_and(|a| a == "find" || a.ends_with("/find"))
}

/// `find`'s starting points: the arguments before the first option or expression.
fn find_starts(argv: &[String]) -> &[String] {
    let rest = &argv[1..];
    let n = rest
        .iter()
        .position(|a| a.starts_with('-') || a == "(" || a == "!" || a == ")")
        .unwrap_or(rest.len());
    &rest[..n]
}

/// What a reset command may delete. `find` with `-path` deletes only what the pattern matches;
/// otherwise every absolute path argument is a tree that may go.
pub fn targets(argv: &[String]) -> Vec<Target> {
    if is_find(argv) {
        let patterns: Vec<Target> = argv
            .windows(2)
            .filter(|w| matches!(w[0].as_str(), "-path" | "-wholename" | "-ipath"))
            .filter_map(|w| target_of(&w[1]))
            .map(|t| Target { prefix: true, ..t })
            .collect();
        if !patterns.is_empty() {
            return patterns;
        }
        return find_starts(argv)
            .iter()
            .filter_map(|a| target_of(a))
            .collect();
    }
    argv.iter().skip(1).filter_map(|a| target_of(a)).collect()
}

/// Splits a mail location at single colons (`::` is a literal colon).
fn location_parts(loc: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = loc.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' {
            if chars.peek() == Some(&':') {
                chars.next();
                parts.last_mut().expect("one part").push(':');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut().expect("one part").push(c);
        }
    }
    parts
}

/// `~` is the home; a `%` variable left unexpanded keeps only the literal directories before it.
fn resolve(path: &str, home: Option<&str>, setting: String) -> Option<Protected> {
    let path = match path.strip_prefix('~') {
        Some(rest) => format!("{}{rest}", home?),
        None => path.replace("%h", home.unwrap_or("%h")),
    };
    if !path.starts_with('/') {
        return None;
    }
    match path.find('%') {
        Some(i) => {
            let literal = &path[..i];
            let dir = &literal[..literal.rfind('/').unwrap_or(0)];
            Some(Protected {
                path: normalize(dir),
                setting,
                template: true,
            })
        }
        None => Some(Protected {
            path: normalize(&path),
            setting,
            template: false,
        }),
    }
}

/// The protected directories and the cache directories (`INDEX=`, `VOLATILEDIR=`) a layout names.
pub fn dirs(layout: &MailLayout) -> (Vec<Protected>, Vec<Protected>) {
    // a home of "/" (some userdbs return it for "no home") would hold every path
    let home = layout
        .home
        .as_deref()
        .filter(|h| !h.is_empty() && normalize(h) != "/");
    let (home_setting, mail_setting) = if layout.expanded {
        ("userdb home", "mail")
    } else {
        ("mail_home", "mail_location")
    };
    let mut protected = Vec::new();
    let mut cache = Vec::new();
    if let Some(h) = home.and_then(|h| resolve(h, None, home_setting.to_string())) {
        protected.push(h);
    }
    let Some(loc) = layout.mail.as_deref().filter(|m| !m.is_empty()) else {
        return (protected, cache);
    };
    let parts = location_parts(loc);
    // "maildir:~/Maildir:..." or a bare path (driver detected by Dovecot)
    let (root, opts) = match parts.first() {
        Some(first) if !first.contains('/') && parts.len() > 1 => (parts[1].as_str(), &parts[2..]),
        _ => (parts[0].as_str(), &parts[1..]),
    };
    if let Some(p) = resolve(root, home, mail_setting.to_string()) {
        protected.push(p);
    }
    for opt in opts {
        let Some((key, value)) = opt.split_once('=') else {
            continue;
        };
        let setting = format!("{mail_setting} {key}=");
        match key {
            "CONTROL" | "INBOX" | "ALT" | "INDEXPVT" => {
                protected.extend(resolve(value, home, setting));
            }
            "INDEX" | "VOLATILEDIR" => cache.extend(resolve(value, home, setting)),
            _ => {}
        }
    }
    (protected, cache)
}

fn under(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.starts_with(&format!("{dir}/"))
}

/// Whether deleting `t` deletes any of `p`: `t` holds `p`, or `t` lies inside `p` and is not
/// inside a cache directory.
fn deletes(t: &Target, p: &Protected, cache: &[Protected]) -> bool {
    let holds = if t.prefix {
        p.path.starts_with(&t.path)
    } else {
        under(&p.path, &t.path)
    };
    if holds {
        return true;
    }
    // inside a cache directory is cache, unless that directory holds the protected one itself
    // (INDEX= pointing at the mail root keeps nothing apart); a cache template counts only
    // inside a template
    let in_cache = |c: &Protected| {
        (p.template || !c.template) && under(&t.path, &c.path) && !under(&p.path, &c.path)
    };
    under(&t.path, &p.path) && !cache.iter().any(in_cache)
}

/// The first reset command that would delete mail data by the settings, or None.
pub fn check(layout: &MailLayout, commands: &[Vec<String>]) -> Option<Refusal> {
    let (protected, cache) = dirs(layout);
    for argv in commands {
        for t in targets(argv) {
            if let Some(p) = protected.iter().find(|p| deletes(&t, p, &cache)) {
                return Some(Refusal {
                    argv: argv.clone(),
                    target: if t.prefix {
                        format!("{}*", t.path)
                    } else {
                        t.path.clone()
                    },
                    protected: p.clone(),
                });
            }
        }
    }
    None
}

/// Names that mark mail or mail metadata (Maildir, dbox, control files, sieve, duplicate
/// database), as a `find` expression group. None of them is in an `INDEX=` directory.
fn marker_expression() -> Vec<String> {
    let names = [
        "dovecot-uidlist",
        "dovecot-keywords",
        "dovecot-uidvalidity*",
        "subscriptions",
        "maildirfolder",
        "dovecot.map.index*",
        "dovecot-acl",
        ".dovecot.sieve",
        "*.sieve",
        "*.svbin",
        ".dovecot.lda-dupes",
        "dovecot.lda-dupes",
        "u.[0-9]*",
        "m.[0-9]*",
    ];
    let mut e = vec!["(".to_string()];
    for n in names {
        e.extend(["-name".to_string(), n.to_string(), "-o".to_string()]);
    }
    e.extend(
        [
            "-type", "d", "(", "-name", "cur", "-o", "-name", "new", "-o", "-name", "sieve", ")",
            ")",
        ]
        .map(String::from),
    );
    e
}

/// The read-only `find` that prints the first mail-data file a reset command would delete: a
/// `find ... -delete` with `-delete` replaced by the marker test, else a search of the trees
/// the command names. None: the command names no path.
pub fn probe(argv: &[String]) -> Option<Vec<String>> {
    let test: Vec<String> = marker_expression()
        .into_iter()
        .chain(["-print".to_string(), "-quit".to_string()])
        .collect();
    if is_find(argv) && argv.iter().any(|a| a == "-delete") {
        let mut out = Vec::new();
        for a in argv {
            if a == "-delete" {
                out.extend(test.iter().cloned());
            } else {
                out.push(a.clone());
            }
        }
        return Some(out);
    }
    let paths: Vec<String> = targets(argv)
        .into_iter()
        .map(|t| {
            if t.prefix {
                // the directory holding the glob: conservative, it may hold more than matches
                let dir = &t.path[..t.path.rfind('/').unwrap_or(0)];
                normalize(dir)
            } else {
                t.path
            }
        })
        .collect();
    if paths.is_empty() {
        return None;
    }
    let mut out = vec!["find".to_string()];
    out.extend(paths);
    out.extend(test);
    Some(out)
}

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    /// Nothing a reset would delete is mail data (or the path does not exist).
    Clean,
    /// This path would be deleted and is mail data.
    Found(String),
    /// `find` could not look everywhere (permissions?): nothing is deleted without knowing.
    Unreadable,
}

/// `find` exits 1 when a starting point is missing ("No such file or directory"): nothing there.
pub fn probed(exit_code: i32, stdout: &str, stderr: &str) -> Probed {
    if let Some(first) = stdout.lines().map(str::trim).find(|l| !l.is_empty()) {
        return Probed::Found(first.to_string());
    }
    if exit_code == 0 || (exit_code == 1 && dovecot::find_only_missing(stderr)) {
        Probed::Clean
    } else {
        Probed::Unreadable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dovecot::default_reset_commands;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|x| x.to_string()).collect()
    }

    fn layout(home: &str, mail: &str, expanded: bool) -> MailLayout {
        MailLayout {
            user: "user1".into(),
            home: Some(home.into()),
            mail: Some(mail.into()),
            expanded,
        }
    }

    // `doveadm -f json user user1` on the shipped example and on the old one (Dovecot 2.3.19)
    const SHIPPED_HOME: &str = "/srv/mail/user1";
    const SHIPPED_MAIL: &str = "maildir:/srv/mail/user1/Maildir:INDEX=/var/dovecot/vmail/user1";
    const OLD_HOME: &str = "/var/dovecot/vmail/user1";
    const OLD_MAIL: &str = "maildir:/srv/mail/user1/Maildir:INDEX=/var/dovecot/vmail/user1:CONTROL=/var/dovecot/vmail/user1";

    #[test]
    fn targets_of_the_default_and_custom_commands() {
        let d = default_reset_commands();
        assert_eq!(
            targets(&d[0]),
            vec![Target {
                path: "/var/lib/dovecot/metacache/metacache-users".into(),
                prefix: true
            }]
        );
        assert_eq!(
            targets(&d[1]),
            vec![Target {
                path: "/var/dovecot/vmail".into(),
                prefix: false
            }]
        );
        assert_eq!(
            targets(&v(&["rm", "-rf", "/var/dovecot//vmail/./x/", "rel"])),
            vec![Target {
                path: "/var/dovecot/vmail/x".into(),
                prefix: false
            }]
        );
        assert_eq!(
            targets(&v(&["rm", "-f", "/var/cache/idx-*"]))[0],
            Target {
                path: "/var/cache/idx-".into(),
                prefix: true
            }
        );
        assert!(targets(&v(&["doveadm", "index", "-u", "x", "INBOX"])).is_empty());
    }

    #[test]
    fn the_shipped_layout_passes_and_the_old_one_is_refused() {
        let d = default_reset_commands();
        assert_eq!(check(&layout(SHIPPED_HOME, SHIPPED_MAIL, true), &d), None);
        let r = check(&layout(OLD_HOME, OLD_MAIL, true), &d).expect("refused");
        assert_eq!(r.target, "/var/dovecot/vmail");
        assert_eq!(r.protected.path, "/var/dovecot/vmail/user1");
        assert_eq!(r.protected.setting, "userdb home");
        assert!(r.message("user1").contains("nothing was deleted"));
        // only CONTROL= in the per-pod volume (home elsewhere)
        let control_only = layout(SHIPPED_HOME, OLD_MAIL, true);
        let r = check(&control_only, &d).expect("refused");
        assert_eq!(r.protected.setting, "mail CONTROL=");
    }

    #[test]
    fn settings_table() {
        let t: &[(&str, &str, &[&str], bool)] = &[
            // home, mail, reset command, refused
            (
                "/home/u",
                "maildir:~/Maildir",
                &["rm", "-rf", "/home"],
                true,
            ),
            (
                "/home/u",
                "maildir:~/Maildir",
                &["rm", "-rf", "/home/u/Maildir/cur"],
                true,
            ),
            (
                "/home/u",
                "maildir:~/Maildir:INDEX=~/idx",
                &["rm", "-rf", "/home/u/idx"],
                false,
            ),
            (
                "/home/u",
                "maildir:~/Maildir:INDEX=~/idx",
                &["rm", "-rf", "/home/u/idx/.Sent"],
                false,
            ),
            (
                "/home/u",
                "maildir:~/Maildir:INDEX=~/idx",
                &["rm", "-rf", "/home/u/idxx"],
                true,
            ),
            (
                "/home/u",
                "mdbox:/srv/m/u:ALT=/alt/u",
                &["find", "/alt", "-delete"],
                true,
            ),
            (
                "/home/u",
                "sdbox:/srv/m/u:INDEXPVT=/var/pvt/u",
                &["rm", "-r", "/var/pvt"],
                true,
            ),
            (
                "/home/u",
                "mbox:~/mail:INBOX=/var/mail/u",
                &["rm", "-f", "/var/mail/u"],
                true,
            ),
            (
                "/home/u",
                "maildir:~/Maildir:VOLATILEDIR=/tmp/v/u",
                &["rm", "-rf", "/tmp/v"],
                false,
            ),
            // INDEX= at the mail root: "cache" there is the mail
            (
                "/home/u",
                "maildir:~/Maildir:INDEX=~/Maildir",
                &["rm", "-rf", "/home/u/Maildir/cur"],
                true,
            ),
            ("/home/u", "/srv/m/u", &["rm", "-rf", "/srv"], true),
            ("/", "maildir:/m/u", &["rm", "-rf", "/var/idx"], false),
            (
                "/home/u",
                "maildir:/m/u",
                &["find", "/", "-path", "/var/lib/x*", "-delete"],
                false,
            ),
            (
                "/home/u",
                "maildir:/m/u",
                &["find", "/", "-path", "/m*", "-delete"],
                true,
            ),
            (
                "/home/u",
                "maildir:/m/u",
                &["find", "/", "-mindepth", "1", "-delete"],
                true,
            ),
        ];
        for (home, mail, argv, refused) in t {
            let got = check(&layout(home, mail, true), &[v(argv)]);
            assert_eq!(got.is_some(), *refused, "{home} {mail} {argv:?}: {got:?}");
        }
    }

    #[test]
    fn doveconf_templates_stand_for_their_trees() {
        let d = default_reset_commands();
        // doveconf -h mail_location mail_home on the old example: %u unexpanded, home unknown
        let old = MailLayout {
            user: "user1".into(),
            home: None,
            mail: Some(OLD_MAIL.replace("user1", "%u")),
            expanded: false,
        };
        let r = check(&old, &d).expect("refused");
        assert_eq!(r.protected.setting, "mail_location CONTROL=");
        assert!(r.protected.template);
        let shipped = MailLayout {
            mail: Some(SHIPPED_MAIL.replace("user1", "%u")),
            ..old.clone()
        };
        assert_eq!(check(&shipped, &d), None);
        // a reset inside a template's tree is refused unless inside the INDEX= template
        let inside = MailLayout {
            mail: Some("maildir:/srv/%u/Maildir:INDEX=/srv/idx/%u".into()),
            ..old
        };
        assert!(check(&inside, &[v(&["rm", "-rf", "/srv/user1"])]).is_some());
        assert!(check(&inside, &[v(&["rm", "-rf", "/srv/idx/user1"])]).is_none());
        // "::" is a literal colon
        assert_eq!(
            location_parts("maildir:/a::b:INDEX=/i"),
            ["maildir", "/a:b", "INDEX=/i"]
        );
    }

    #[test]
    fn probes_replace_delete_with_the_marker_test() {
        let d = default_reset_commands();
        let p = probe(&d[1]).unwrap();
        assert_eq!(
            &p[..4],
            &v(&["find", "/var/dovecot/vmail", "-mindepth", "1"])[..]
        );
        assert!(!p.contains(&"-delete".to_string()));
        assert_eq!(&p[p.len() - 2..], &v(&["-print", "-quit"])[..]);
        let rm = probe(&v(&["rm", "-rf", "/var/idx", "/var/c/x*"])).unwrap();
        assert_eq!(&rm[..4], &v(&["find", "/var/idx", "/var/c", "("])[..]);
        assert_eq!(probe(&v(&["doveadm", "reload"])), None);
    }

    #[test]
    fn probe_outcomes() {
        // find 4.9 (Debian 12) on a missing starting point, and on an unreadable folder
        let missing = "find: '/var/dovecot/vmail': No such file or directory\n";
        assert_eq!(probed(1, "", missing), Probed::Clean);
        assert_eq!(probed(0, "", ""), Probed::Clean);
        assert_eq!(
            probed(0, "/var/dovecot/vmail/user1/dovecot-uidlist\n", ""),
            Probed::Found("/var/dovecot/vmail/user1/dovecot-uidlist".into())
        );
        let denied = "find: '/var/dovecot/vmail/x': Permission denied\n";
        assert_eq!(probed(1, "", denied), Probed::Unreadable);
        assert_eq!(probed(1, "", ""), Probed::Unreadable);
        assert!(!dovecot::find_only_missing(""));
    }
}
