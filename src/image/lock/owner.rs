//! Who a holding process is, from its command line: the VM's name, what manages it, and the
//! QMP socket imgchain may talk to (ARCHITECTURE.md §7). Pure parsing: the arguments come from
//! `/proc/<pid>/cmdline`.
//!
//! A libvirt-managed QEMU's monitor belongs to libvirt (only one client may attach, and libvirt
//! taints a domain others talk to), so it is never offered as a QMP socket.

use std::path::PathBuf;

/// What runs the holding process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    /// A QEMU system emulator that libvirt started.
    Libvirt,
    /// A QEMU system emulator that Proxmox VE started (`-id VMID`, qemu-server's pid file).
    Proxmox,
    /// A QEMU system emulator started by hand or by another tool.
    Qemu,
    /// `qemu-storage-daemon`.
    StorageDaemon,
    /// Another QEMU tool (qemu-io, qemu-img, qemu-nbd).
    QemuTool,
    /// Anything else.
    Other,
}

impl Manager {
    /// The spelling in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Manager::Libvirt => "libvirt",
            Manager::Proxmox => "proxmox",
            Manager::Qemu => "qemu",
            Manager::StorageDaemon => "qemu-storage-daemon",
            Manager::QemuTool => "qemu-tool",
            Manager::Other => "other",
        }
    }
}

/// The owner of a holding process, as far as its command line tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The program's file name (`qemu-system-x86_64`).
    pub program: String,
    /// The VM's name (`-name guest=NAME` or `-name NAME`), or Proxmox's VM id.
    pub name: Option<String>,
    pub manager: Manager,
    /// A QMP socket the user set up (never libvirt's monitor).
    pub qmp: Option<PathBuf>,
}

/// The first element of a QEMU option value (`guest=web03,debug-threads=on` → the `guest`
/// value, or a leading bare value), with QEMU's `,,` escape undone.
fn first_value(value: &str, key: &str) -> Option<String> {
    let parts = split_opts(value);
    parts
        .iter()
        .find_map(|p| p.strip_prefix(&format!("{key}=")).map(String::from))
        .or_else(|| parts.first().filter(|p| !p.contains('=')).cloned())
        .filter(|v| !v.is_empty())
}

/// Splits a QEMU option string at single commas (`,,` is a literal comma).
fn split_opts(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                if let Some(s) = out.last_mut() {
                    s.push(',');
                }
            } else {
                out.push(String::new());
            }
        } else if let Some(s) = out.last_mut() {
            s.push(c);
        }
    }
    out
}

/// The value of `key=` in a QEMU option string.
fn opt(value: &str, key: &str) -> Option<String> {
    split_opts(value)
        .into_iter()
        .find_map(|p| p.strip_prefix(&format!("{key}=")).map(String::from))
}

/// Whether a chardev option string describes a listening unix socket.
fn is_server(value: &str) -> bool {
    split_opts(value)
        .iter()
        .any(|p| p == "server" || p == "server=on" || p == "server=yes")
}

/// Where a system libvirt daemon keeps its QEMUs' files.
const SYSTEM_LIBVIRT: &[&str] = &["/var/lib/libvirt/qemu/", "/run/libvirt/qemu/"];
/// Where a user's session libvirt daemon keeps them.
const SESSION_LIBVIRT: &[&str] = &["/.config/libvirt/qemu/", "/libvirt/qemu/run/"];

/// The libvirt connection managing a libvirt QEMU with this command line: the system
/// daemon's, or the user's session daemon's.
pub fn libvirt_uri(command: &str) -> &'static str {
    if SYSTEM_LIBVIRT.iter().any(|p| command.contains(p)) {
        "qemu:///system"
    } else {
        "qemu:///session"
    }
}

/// Reads the owner from a command line (`argv[0]` first).
pub fn parse(argv: &[String]) -> Owner {
    let program = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    // QEMU accepts `-opt` and `--opt`, and `--opt=value` as well as `--opt value`.
    let mut opts: Vec<(String, String)> = Vec::new();
    let mut i = 1;
    while i < argv.len() {
        let a = &argv[i];
        if let Some(o) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) {
            if let Some((k, v)) = o.split_once('=').filter(|_| a.starts_with("--")) {
                opts.push((k.to_string(), v.to_string()));
            } else {
                // A flag (`-S`, `-no-shutdown`) is followed by the next option, not a value.
                match argv.get(i + 1).filter(|v| !v.starts_with('-')) {
                    Some(v) => {
                        opts.push((o.to_string(), v.clone()));
                        i += 1;
                    }
                    None => opts.push((o.to_string(), String::new())),
                }
            }
        }
        i += 1;
    }
    let value = |k: &str| opts.iter().find(|(o, _)| o == k).map(|(_, v)| v.as_str());
    let libvirt = argv.iter().any(|a| {
        SYSTEM_LIBVIRT
            .iter()
            .chain(SESSION_LIBVIRT)
            .any(|p| a.contains(p))
    });
    let proxmox_id = value("id")
        .filter(|_| {
            argv.iter()
                .any(|a| a.contains("/var/run/qemu-server/") || a.contains("/run/qemu-server/"))
        })
        .map(String::from);
    let manager = if program.starts_with("qemu-system") || program == "qemu-kvm" || program == "kvm"
    {
        if libvirt {
            Manager::Libvirt
        } else if proxmox_id.is_some() {
            Manager::Proxmox
        } else {
            Manager::Qemu
        }
    } else if program == "qemu-storage-daemon" {
        Manager::StorageDaemon
    } else if program.starts_with("qemu-") {
        Manager::QemuTool
    } else {
        Manager::Other
    };
    let name = value("name")
        .and_then(|v| first_value(v, "guest"))
        .or(proxmox_id);
    let qmp = if manager == Manager::Libvirt {
        None
    } else {
        qmp_socket(&opts)
    };
    Owner {
        program,
        name,
        manager,
        qmp,
    }
}

/// The unix socket of a QMP monitor: `-qmp unix:PATH,server...`, or a `-chardev
/// socket,id=X,path=PATH,server=on` used by `-mon chardev=X,mode=control` (QEMU) or
/// `--monitor chardev=X` (qemu-storage-daemon, whose monitors are always QMP).
fn qmp_socket(opts: &[(String, String)]) -> Option<PathBuf> {
    for (k, v) in opts {
        if (k == "qmp" || k == "qmp-pretty")
            && let Some(rest) = v.strip_prefix("unix:")
            && is_server(v)
        {
            return split_opts(rest).first().map(PathBuf::from);
        }
    }
    let control: Vec<String> = opts
        .iter()
        .filter(|(k, v)| {
            (k == "mon" && opt(v, "mode").as_deref() == Some("control"))
                || (k == "monitor" && opt(v, "mode").is_none_or(|m| m == "control"))
        })
        .filter_map(|(_, v)| opt(v, "chardev"))
        .collect();
    opts.iter()
        .filter(|(k, v)| k == "chardev" && v.starts_with("socket,") && is_server(v))
        .find(|(_, v)| opt(v, "id").is_some_and(|id| control.contains(&id)))
        .and_then(|(_, v)| opt(v, "path"))
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn plain_qemu_with_a_qmp_socket() {
        let o = parse(&argv(
            "/usr/bin/qemu-system-x86_64 -enable-kvm -m 2048 -name web03 \
             -drive file=/srv/vms/web03.qcow2,if=virtio -qmp unix:/run/web03.qmp,server,nowait",
        ));
        assert_eq!(o.program, "qemu-system-x86_64");
        assert_eq!(o.name.as_deref(), Some("web03"));
        assert_eq!(o.manager, Manager::Qemu);
        assert_eq!(o.qmp, Some(PathBuf::from("/run/web03.qmp")));
        let o = parse(&argv(
            "qemu-system-aarch64 --name guest=db,,primary,debug-threads=on \
             -chardev socket,id=mon0,path=/tmp/db.sock,server=on,wait=off \
             -mon chardev=mon0,mode=control",
        ));
        assert_eq!(o.name.as_deref(), Some("db,primary"));
        assert_eq!(o.qmp, Some(PathBuf::from("/tmp/db.sock")));
        // A human monitor on a socket is not QMP.
        let o = parse(&argv(
            "qemu-system-x86_64 -chardev socket,id=h,path=/tmp/h.sock,server=on \
             -mon chardev=h,mode=readline",
        ));
        assert_eq!(o.qmp, None);
        assert_eq!(o.name, None);
    }

    #[test]
    fn libvirt_s_monitor_is_never_offered() {
        let o = parse(&argv(
            "/usr/bin/qemu-system-x86_64 -name guest=web03,debug-threads=on -S \
             -object {\"qom-type\":\"secret\",\"id\":\"masterKey0\",\"format\":\"raw\",\
             \"file\":\"/var/lib/libvirt/qemu/domain-3-web03/master-key.aes\"} \
             -chardev socket,id=charmonitor,fd=31,server=on,wait=off \
             -mon chardev=charmonitor,id=monitor,mode=control",
        ));
        assert_eq!(o.manager, Manager::Libvirt);
        assert_eq!(o.name.as_deref(), Some("web03"));
        assert_eq!(o.qmp, None);
    }

    #[test]
    fn storage_daemon_and_proxmox_and_tools() {
        let o = parse(&argv(
            "qemu-storage-daemon --blockdev driver=file,node-name=f,filename=/x.qcow2 \
             --chardev socket,path=/tmp/qsd.qmp,server=on,wait=off,id=m --monitor chardev=m \
             --nbd-server addr.type=unix,addr.path=/tmp/nbd.sock",
        ));
        assert_eq!(o.manager, Manager::StorageDaemon);
        assert_eq!(o.qmp, Some(PathBuf::from("/tmp/qsd.qmp")));
        let o = parse(&argv(
            "/usr/bin/kvm -id 105 -name win11,debug-threads=on -no-shutdown \
             -chardev socket,id=qmp,path=/var/run/qemu-server/105.qmp,server=on,wait=off \
             -mon chardev=qmp,mode=control -pidfile /var/run/qemu-server/105.pid",
        ));
        assert_eq!(o.manager, Manager::Proxmox);
        assert_eq!(o.name.as_deref(), Some("win11"));
        assert_eq!(o.qmp, Some(PathBuf::from("/var/run/qemu-server/105.qmp")));
        let o = parse(&argv("qemu-io -c sleep 60000 /srv/top.qcow2"));
        assert_eq!(o.manager, Manager::QemuTool);
        assert_eq!((o.name, o.qmp), (None, None));
        assert_eq!(parse(&[]).manager, Manager::Other);
        assert_eq!(parse(&argv("cp a b")).manager, Manager::Other);
    }
}
