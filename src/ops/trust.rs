//! The trust boundary (ARCHITECTURE.md §8): an operation writes, or copies from, only files
//! the owners of the images it works on could write, or read, themselves. A tenant's header
//! can name any file; root must not write into it, nor copy it into the tenant's image.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Refusal;
use crate::forest::{Forest, NodeId};
use crate::image::file::Owner;
use crate::text::Names;

/// What a user must be able to do with a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Read,
    Write,
}

impl Want {
    /// The permission bit for the owner; group and others are this shifted right by 3 and 6.
    fn owner_bit(self) -> u32 {
        match self {
            Want::Read => 0o400,
            Want::Write => 0o200,
        }
    }
}

/// A user, with the groups it is in.
#[derive(Clone, Debug)]
pub struct User {
    pub uid: u32,
    pub name: String,
    pub groups: Vec<u32>,
}

impl User {
    /// The user `uid`, with its groups from the user database (none when it has no entry).
    pub fn of(uid: u32) -> User {
        let entry = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        let Some(entry) = entry else {
            return User {
                uid,
                name: format!("uid {uid}"),
                groups: Vec::new(),
            };
        };
        let groups = CString::new(entry.name.as_bytes())
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, entry.gid).ok())
            .map_or_else(
                || vec![entry.gid.as_raw()],
                |g| g.into_iter().map(|g| g.as_raw()).collect(),
            );
        User {
            uid,
            name: format!("{} (uid {uid})", entry.name),
            groups,
        }
    }

    /// Whether the mode bits of a file `owner` owns let this user do `want`.
    pub fn may(&self, owner: &Owner, want: Want) -> bool {
        self.may_bit(owner, want.owner_bit())
    }

    /// Whether this user could reach `path` (search permission on every directory above it)
    /// and then do `want` with the file.
    pub fn could(&self, path: &Path, owner: &Owner, want: Want) -> bool {
        let searchable = |dir: &Path| {
            std::fs::metadata(dir).is_ok_and(|m| {
                let o = Owner {
                    uid: m.uid(),
                    gid: m.gid(),
                    mode: m.mode(),
                };
                self.may_bit(&o, 0o100)
            })
        };
        path.ancestors().skip(1).all(searchable) && self.may(owner, want)
    }

    /// Whether the owner's permission `bit` (or its group or others' counterpart) is set for
    /// this user; root may do anything.
    fn may_bit(&self, owner: &Owner, bit: u32) -> bool {
        if self.uid == 0 {
            true
        } else if self.uid == owner.uid {
            owner.mode & bit != 0
        } else if self.groups.contains(&owner.gid) {
            owner.mode & (bit >> 3) != 0
        } else {
            owner.mode & (bit >> 6) != 0
        }
    }
}

/// Refuses (exit 18, never lifted by `--force`) unless every image in `written` could be
/// written by each user other than root who owns an image in `involved`, and every image in
/// `sources` (whose data lands in the written ones) could be read by the owners of the
/// written ones.
pub fn within_reach(
    forest: &Forest,
    involved: &[NodeId],
    written: &[NodeId],
    sources: &[NodeId],
) -> Result<(), Refusal> {
    let mut users: HashMap<u32, User> = HashMap::new();
    let mut user = |uid: u32| users.entry(uid).or_insert_with(|| User::of(uid)).clone();
    let owner_of = |id: NodeId| {
        let n = forest.node(id);
        n.owner.ok_or_else(|| Refusal::Untrusted {
            path: n.path.clone(),
            what: "could not be looked at (no owner known), so imgchain does not touch it".into(),
        })
    };
    let mut tenants = Vec::new();
    for &id in involved {
        let o = owner_of(id)?;
        if o.uid != 0 && !tenants.iter().any(|(u, _): &(u32, NodeId)| *u == o.uid) {
            tenants.push((o.uid, id));
        }
    }
    for &w in written {
        let wo = owner_of(w)?;
        for &(uid, by) in &tenants {
            let u = user(uid);
            if !u.could(&forest.node(w).path, &wo, Want::Write) {
                return Err(refuse(forest, w, &u, by, "write"));
            }
        }
        if wo.uid == 0 {
            continue;
        }
        let u = user(wo.uid);
        for &s in sources {
            if !u.could(&forest.node(s).path, &owner_of(s)?, Want::Read) {
                return Err(refuse(forest, s, &u, w, "read"));
            }
        }
    }
    Ok(())
}

fn refuse(forest: &Forest, file: NodeId, user: &User, by: NodeId, verb: &str) -> Refusal {
    Refusal::Untrusted {
        path: forest.node(file).path.clone(),
        what: format!(
            "is a file {} could not {verb}, and {} belongs to that user: a name in a header \
             that user controls leads here, so imgchain will not {verb} it for them (--force \
             does not change this); if the chain is really meant to use this file, give that \
             user access to it first (chown or chmod)",
            user.name,
            forest.node(by).path.shown()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, groups: &[u32]) -> User {
        User {
            uid,
            name: format!("uid {uid}"),
            groups: groups.to_vec(),
        }
    }

    fn owned(uid: u32, gid: u32, mode: u32) -> Owner {
        Owner { uid, gid, mode }
    }

    #[test]
    fn mode_bits_decide_by_owner_then_group_then_others() {
        let u = user(1000, &[1000, 27]);
        assert!(u.may(&owned(1000, 1000, 0o600), Want::Write));
        assert!(!u.may(&owned(1000, 1000, 0o400), Want::Write));
        assert!(!u.may(&owned(0, 0, 0o600), Want::Read));
        assert!(u.may(&owned(0, 27, 0o640), Want::Read));
        assert!(!u.may(&owned(0, 27, 0o640), Want::Write));
        assert!(u.may(&owned(0, 0, 0o644), Want::Read));
        assert!(!u.may(&owned(0, 0, 0o644), Want::Write));
        // The owner's bits apply to the owner even when others have more.
        assert!(!u.may(&owned(1000, 0, 0o066), Want::Read));
        assert!(user(0, &[]).may(&owned(5, 5, 0), Want::Write));
    }

    #[test]
    fn a_directory_the_user_cannot_search_hides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = dir.path().join("inner");
        std::fs::create_dir(&inner).expect("mkdir");
        let file = inner.join("f");
        std::fs::write(&file, b"x").expect("write");
        let md = std::fs::metadata(dir.path()).expect("stat");
        let u = user(md.uid().wrapping_add(12345), &[]);
        let world = owned(0, 0, 0o666);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(!u.could(&file, &world, Want::Read));
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod");
        assert!(u.could(&file, &world, Want::Read));
    }
}
