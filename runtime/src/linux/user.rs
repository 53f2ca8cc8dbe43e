//! The container's user: `--user` or the image's `User` (`uid`, `uid:gid`, `name`,
//! `name:group`) resolved against the container's own `/etc/passwd` and `/etc/group`, read
//! after `pivot_root` so a link in the image cannot point the lookup at the host.

use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error(
        "user `{name}` is not in the image's /etc/passwd; give a numeric uid (e.g. --user 1000) or a user the image has"
    )]
    UnknownUser { name: String },
    #[error(
        "group `{name}` is not in the image's /etc/group; give a numeric gid (e.g. --user 1000:1000) or a group the image has"
    )]
    UnknownGroup { name: String },
}

/// The ids a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups from `/etc/group`.
    pub groups: Vec<u32>,
    pub home: Option<String>,
}

/// Resolves `user` against the files' contents (either may be absent: empty text).
pub fn resolve(user: &str, passwd: &str, group: &str) -> Result<Ids, UserError> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = passwd
        .lines()
        .filter_map(PasswdEntry::parse)
        .find(|e| e.name == user_part || user_part.parse() == Ok(e.uid));
    let (uid, mut gid, name, home) = match (&entry, user_part.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name), Some(e.home.to_string())),
        (None, Ok(uid)) => (uid, 0, None, None),
        (None, Err(_)) => {
            return Err(UserError::UnknownUser {
                name: user_part.into(),
            });
        }
    };
    let groups: Vec<GroupEntry> = group.lines().filter_map(GroupEntry::parse).collect();
    if let Some(wanted) = group_part {
        gid = match groups.iter().find(|g| g.name == wanted) {
            Some(g) => g.gid,
            None => wanted.parse().map_err(|_| UserError::UnknownGroup {
                name: wanted.into(),
            })?,
        };
    }
    let supplementary = match name {
        Some(name) if group_part.is_none() => groups
            .iter()
            .filter(|g| g.members.contains(&name) && g.gid != gid)
            .map(|g| g.gid)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Ids {
        uid,
        gid,
        groups: supplementary,
        home,
    })
}

/// Reads `/etc/passwd` and `/etc/group` under `root` (after `pivot_root`, `/`).
pub fn resolve_in(root: &Path, user: &str) -> Result<Ids, UserError> {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    resolve(user, &read("etc/passwd"), &read("etc/group"))
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

impl<'a> PasswdEntry<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || line.starts_with('#') {
            return None;
        }
        Some(Self {
            name: fields[0],
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields.get(5).copied().unwrap_or("/"),
        })
    }
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

impl<'a> GroupEntry<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 3 || line.starts_with('#') {
            return None;
        }
        Some(Self {
            name: fields[0],
            gid: fields[2].parse().ok()?,
            members: fields
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nskiff:x:1000:1000::/home/skiff:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\nskiff:x:1000:\nwheel:x:10:skiff\nnogroup:x:65534:\n";

    #[test]
    fn names_and_numbers_resolve() {
        let ids = resolve("skiff", PASSWD, GROUP).unwrap();
        assert_eq!(
            (ids.uid, ids.gid, ids.groups.as_slice()),
            (1000, 1000, &[10][..])
        );
        assert_eq!(ids.home.as_deref(), Some("/home/skiff"));
        let ids = resolve("1000", PASSWD, GROUP).unwrap();
        assert_eq!((ids.uid, ids.gid), (1000, 1000));
        let ids = resolve("4242", PASSWD, GROUP).unwrap();
        assert_eq!((ids.uid, ids.gid), (4242, 0));
        let ids = resolve("nobody:wheel", PASSWD, GROUP).unwrap();
        assert_eq!((ids.uid, ids.gid), (65534, 10));
        let ids = resolve("4242:4343", "", "").unwrap();
        assert_eq!((ids.uid, ids.gid), (4242, 4343));
    }

    #[test]
    fn unknown_names_say_what_to_do() {
        let err = resolve("postgres", PASSWD, GROUP).unwrap_err();
        assert!(err.to_string().contains("give a numeric uid"), "{err}");
        let err = resolve("skiff:staff", PASSWD, GROUP).unwrap_err();
        assert!(err.to_string().contains("give a numeric gid"), "{err}");
    }
}
