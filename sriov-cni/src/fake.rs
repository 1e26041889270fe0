//! TEST ONLY: a file-backed [`VfConfigurator`] and [`TestSeam`] selected by
//! `SRIOV_CNI_FAKE_VF_STATE=<file>`. Compiled only with the cargo feature `test-fake`, and
//! selected only by the test binary `sriov-test`: the shipped `sriov` refuses ADD when
//! the variable is set (see [`crate::cli`]).
//!
//! The host kernel of the test machines has no SR-IOV, so the test suites run the real
//! binary with VF settings kept in a JSON file instead of on a PF:
//!
//! ```json
//! {
//!   "vfs":   { "ens1f0/3": { "mac": "00:00:00:00:00:00", "vlan": 0, ... } },
//!   "fail":  { "vf:trust": 95, "move": 5 },
//!   "rdma":  { "mlx5_3": 4026531840 },
//!   "calls": [ "set ens1f0 vf 3 trust=on" ]
//! }
//! ```
//!
//! `vfs` holds each VF's state (absent VFs start from [`VfState::default`]); `fail` maps a
//! step to the errno it fails with: `vf:<setting>` refuses that setting before applying it
//! (like a driver; `vf:rdma:<device>` refuses one RDMA device's move), any other step name (`move`, `ipam`, `addresses`, `up`, `routes`,
//! `rdma`, `cache`, `vf-read`) fails right *after* that step completed, so the undo must
//! revert it too. `rdma` records the netns inode each RDMA device was moved to; `calls`
//! records every call. Concurrent processes serialise on `<file>.lock`.
//!
//! InfiniBand VFs: `ib_vfs` holds each VF's GUID columns ([`IbVf`]): the PF's VF table
//! (`node`, `port`) changes on `set_guid` (refused with `fail["vf:node_guid"]` /
//! `["vf:port_guid"]`), the driver's view (`bound_*`) only on a rebind. `rebind` works on
//! the fixture sysfs tree: unbind moves the VF's `net/` aside (its netdev disappears),
//! bind brings it back unless `stuck_binds` is non-zero (each stuck bind consumes one;
//! the wait then times out after `rebind_timeout_ms`, default 2000). The veth standing
//! in for the netdev keeps its ifindex.
//!
//! `"igb": true` adds a model of how igb/igbvf handle a VF's MAC (checked on a real
//! 6.1 kernel in the QEMU lab), with per-VF driver state in `igb_vfs`:
//! - `vf N mac M` on the PF sets the admin flag (cleared again by `00:00:00:00:00:00`);
//! - once the VF has been up (its mailbox is active), writing its netdev MAC asks the
//!   PF: refused with EADDRNOTAVAIL for an untrusted VF while the admin flag is set,
//!   otherwise the PF records that MAC and reports it for the VF;
//! - bringing the VF up only activates the mailbox: the PF's report does not change;
//! - taking it down (also by moving it to another netns) resets the VF, which then asks
//!   for its netdev MAC as above (seen in the lab: a never-used VF reports
//!   00:00:00:00:00:00 while up in a pod, and its netdev MAC after leaving the pod). A
//!   refused request makes the real VF take the admin MAC; the plugin writes the admin
//!   MAC on the netdev before it sets it on the PF, so that is not modelled.

use crate::config::Mac;
use crate::ib::netlink::{GuidKind, VfGuids, fmt_raw};
use crate::ib::rebind::{DriverBinding, RebindError, SysfsBinding};
use crate::netlink::NlError;
use crate::netns::Netns;
use crate::sriov::{TestSeam, VfConfigurator, VfSetting, VfState};
use nix::fcntl::{Flock, FlockArg};
use rdma_hca::PciAddress;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The fake's file content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FakeState {
    /// VF state by `<pf>/<index>`.
    #[serde(default)]
    pub vfs: BTreeMap<String, VfState>,
    /// Step -> errno to fail with.
    #[serde(default)]
    pub fail: BTreeMap<String, i32>,
    /// RDMA device -> netns inode.
    #[serde(default)]
    pub rdma: BTreeMap<String, u64>,
    /// Every call, in order.
    #[serde(default)]
    pub calls: Vec<String>,
    /// Model igb's VF MAC handling (see the module docs).
    #[serde(default)]
    pub igb: bool,
    /// igb driver state by `<pf>/<index>` (with `igb`).
    #[serde(default)]
    pub igb_vfs: BTreeMap<String, IgbVf>,
    /// InfiniBand VFs by `<pf>/<index>`: the GUID columns (see [`IbVf`]).
    #[serde(default)]
    pub ib_vfs: BTreeMap<String, IbVf>,
    /// How many coming binds leave the VF without its netdev (a probe that never
    /// finishes): each consumes one.
    #[serde(default)]
    pub stuck_binds: u32,
    /// The wait for the netdev after a bind, in milliseconds (default 2000).
    #[serde(default)]
    pub rebind_timeout_ms: Option<u64>,
}

/// The fake's model of an mlx5 IB VF: the PF's VF table reports a GUID as soon as it is
/// set (`node`, `port`), the VF's driver only takes it at its next probe (`bound_node`,
/// `bound_port`: what the VF's IPoIB address and RDMA device show). A rebind removes the
/// VF's `net/` entry in the sysfs tree and a bind puts it back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IbVf {
    /// Node GUID in the PF's VF table.
    pub node: u64,
    /// Port GUID in the PF's VF table.
    pub port: u64,
    /// Node GUID the VF driver uses.
    pub bound_node: u64,
    /// Port GUID the VF driver uses.
    pub bound_port: u64,
    /// Binds so far.
    pub binds: u32,
}

/// igb's per-VF MAC state (the fake's model, see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgbVf {
    /// `IGB_VF_FLAG_PF_SET_MAC`: the PF set a non-zero MAC for this VF.
    pub admin_mac: bool,
    /// The VF has been up once (its mailbox is active).
    pub been_up: bool,
}

impl FakeState {
    /// The igb model's answer to the VF asking for `mac`: `Err` if refused, otherwise the
    /// PF records it.
    fn igb_vf_sets_mac(&mut self, k: &str, mac: Mac) -> Result<(), i32> {
        let igb = self.igb_vfs.get(k).cloned().unwrap_or_default();
        let vf = self.vfs.entry(k.to_string()).or_default();
        if igb.admin_mac && !vf.trust {
            return Err(libc::EADDRNOTAVAIL);
        }
        vf.mac = mac;
        Ok(())
    }
}

impl FakeState {
    /// Load a state file (empty state when it does not exist).
    pub fn load(path: &Path) -> std::io::Result<FakeState> {
        match std::fs::read(path) {
            Ok(b) if b.is_empty() => Ok(FakeState::default()),
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FakeState::default()),
            Err(e) => Err(e),
        }
    }

    /// Write a state file atomically.
    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, path)
    }
}

/// The file-backed fake.
pub struct FileFake {
    path: PathBuf,
}

impl FileFake {
    /// Use the state file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> FileFake {
        FileFake { path: path.into() }
    }

    fn with<T>(
        &self,
        op: &str,
        f: impl FnOnce(&mut FakeState) -> Result<T, NlError>,
    ) -> Result<T, NlError> {
        let io = |e: std::io::Error| NlError::io(op, self.path.display().to_string(), &e);
        let lock_path = self.path.with_extension("lock");
        let lf = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        let _lock = Flock::lock(lf, FlockArg::LockExclusive)
            .map_err(|(_, e)| io(std::io::Error::from_raw_os_error(e as i32)))?;
        let mut st = FakeState::load(&self.path).map_err(io)?;
        let out = f(&mut st);
        st.store(&self.path).map_err(io)?;
        out
    }
}

fn key(pf: &str, vf: u32) -> String {
    format!("{pf}/{vf}")
}

impl VfConfigurator for FileFake {
    fn vf_state(&mut self, pf: &str, vf: u32) -> Result<VfState, NlError> {
        self.with("read VF table of PF", |st| {
            st.calls.push(format!("get {pf} vf {vf}"));
            Ok(st.vfs.get(&key(pf, vf)).cloned().unwrap_or_default())
        })
    }

    fn set(&mut self, pf: &str, vf: u32, setting: &VfSetting) -> Result<(), NlError> {
        self.with("set VF", |st| {
            st.calls
                .push(format!("set {pf} vf {vf} {}", setting.describe()));
            if let Some(errno) = st.fail.get(&format!("vf:{}", setting.name())) {
                return Err(NlError::errno(
                    "set VF",
                    format!("{pf} vf {vf} {}", setting.describe()),
                    *errno,
                ));
            }
            let entry = st.vfs.entry(key(pf, vf)).or_default();
            setting.apply_to(entry);
            if st.igb
                && let VfSetting::Mac { mac } = setting
            {
                st.igb_vfs.entry(key(pf, vf)).or_default().admin_mac = !mac.is_zero();
            }
            Ok(())
        })
    }

    fn rdma_move(
        &mut self,
        dev: &str,
        from: &Netns,
        to: &Netns,
        _home: &Netns,
    ) -> Result<(), NlError> {
        self.with("move RDMA device", |st| {
            st.calls
                .push(format!("rdma {dev} {} -> {}", from.inode(), to.inode()));
            if let Some(errno) = st
                .fail
                .get(&format!("vf:rdma:{dev}"))
                .or_else(|| st.fail.get("vf:rdma"))
            {
                return Err(NlError::errno("move RDMA device", dev, *errno));
            }
            if let Some(cur) = st.rdma.get(dev)
                && *cur != from.inode()
            {
                return Err(NlError::errno("move RDMA device", dev, libc::ENODEV));
            }
            st.rdma.insert(dev.to_string(), to.inode());
            Ok(())
        })
    }

    fn vf_guids(&mut self, pf: &str) -> Result<Vec<(u32, VfGuids)>, NlError> {
        self.with("read VF table of PF", |st| {
            st.calls.push(format!("get {pf} guids"));
            let prefix = format!("{pf}/");
            Ok(st
                .ib_vfs
                .iter()
                .filter_map(|(k, v)| {
                    let vf = k.strip_prefix(&prefix)?.parse().ok()?;
                    Some((
                        vf,
                        VfGuids {
                            node: Some(v.node),
                            port: Some(v.port),
                        },
                    ))
                })
                .collect())
        })
    }

    fn set_guid(&mut self, pf: &str, vf: u32, kind: GuidKind, guid: u64) -> Result<(), NlError> {
        self.with("set VF", |st| {
            let what = format!("{pf} vf {vf} {} {}", kind.name(), fmt_raw(guid));
            st.calls.push(format!("set {what}"));
            if let Some(errno) = st.fail.get(&format!("vf:{}", kind.name())) {
                return Err(NlError::errno("set VF", what, *errno));
            }
            let v = st.ib_vfs.entry(key(pf, vf)).or_default();
            match kind {
                GuidKind::Node => v.node = guid,
                GuidKind::Port => v.port = guid,
            }
            Ok(())
        })
    }

    fn rebind(&mut self, root: &Path, vf: &PciAddress) -> Result<String, RebindError> {
        let read = |msg: String| RebindError::Read {
            vf: vf.to_string(),
            msg,
        };
        let host = rdma_hca::Host::new(root);
        let f = host.function(vf).map_err(|e| read(e.to_string()))?;
        let pf_pci = f.physfn.clone().ok_or_else(|| read("no physfn".into()))?;
        let pf = host
            .function(&pf_pci)
            .map_err(|e| read(e.to_string()))?
            .netdevs
            .first()
            .cloned()
            .ok_or_else(|| read("PF has no netdev".into()))?;
        let idx = f.vf_index.ok_or_else(|| read("no VF index".into()))?;
        let timeout = self
            .with("rebind", |st| {
                st.calls.push(format!("rebind {vf}"));
                Ok(st.rebind_timeout_ms)
            })
            .map_err(|e| read(e.to_string()))?
            .map_or(
                std::time::Duration::from_secs(2),
                std::time::Duration::from_millis,
            );
        let mut b = FakeBinding {
            fake: self,
            root: root.to_path_buf(),
            pf,
            vf: idx,
        };
        crate::ib::rebind::rebind(&mut b, vf, timeout)
    }
}

impl TestSeam for FileFake {
    fn netdev_mac(&mut self, pf: &str, vf: u32, mac: Mac) -> Result<(), NlError> {
        self.with("set VF netdev MAC", |st| {
            st.calls.push(format!("netdev {pf} vf {vf} mac={mac}"));
            let k = key(pf, vf);
            if st.igb && st.igb_vfs.get(&k).is_some_and(|i| i.been_up) {
                st.igb_vf_sets_mac(&k, mac).map_err(|errno| {
                    NlError::errno(
                        "set VF netdev MAC",
                        format!("{pf} vf {vf} mac={mac} (igb: VF {vf} attempted to override administratively set MAC address)"),
                        errno,
                    )
                })?;
            }
            Ok(())
        })
    }

    fn netdev_down(&mut self, pf: &str, vf: u32, mac: Option<Mac>) -> Result<(), NlError> {
        self.with("take VF netdev down", |st| {
            let shown = mac.map(|m| m.to_string()).unwrap_or_default();
            st.calls
                .push(format!("netdev {pf} vf {vf} down had={shown}"));
            let k = key(pf, vf);
            if st.igb
                && st.igb_vfs.get(&k).is_some_and(|i| i.been_up)
                && let Some(m) = mac
            {
                // A refused request leaves the PF's record alone.
                let _ = st.igb_vf_sets_mac(&k, m);
            }
            Ok(())
        })
    }

    fn netdev_up(&mut self, pf: &str, vf: u32) -> Result<(), NlError> {
        self.with("bring VF netdev up", |st| {
            st.calls.push(format!("netdev {pf} vf {vf} up"));
            if st.igb {
                st.igb_vfs.entry(key(pf, vf)).or_default().been_up = true;
            }
            Ok(())
        })
    }

    fn fault(&mut self, step: &str) -> Result<(), NlError> {
        // Read-only peek: no lock needed for a file written atomically.
        let st = FakeState::load(&self.path)
            .map_err(|e| NlError::io("read", self.path.display().to_string(), &e))?;
        match st.fail.get(step) {
            Some(errno) => Err(NlError::errno(
                format!("injected failure after step {step}"),
                "",
                *errno,
            )),
            None => Ok(()),
        }
    }
}

/// The sysfs side of a rebind on the fixture tree: the real [`SysfsBinding`] writes
/// (into plain files there), and what the kernel would do about them.
struct FakeBinding<'a> {
    fake: &'a mut FileFake,
    root: PathBuf,
    pf: String,
    vf: u32,
}

impl FakeBinding<'_> {
    fn net_dirs(&self, vf: &PciAddress) -> (PathBuf, PathBuf) {
        let dev = self.root.join("sys/bus/pci/devices").join(vf.as_str());
        (dev.join("net"), dev.join(".net-unbound"))
    }
}

impl DriverBinding for FakeBinding<'_> {
    fn driver(&mut self, vf: &PciAddress) -> Result<Option<String>, RebindError> {
        SysfsBinding::new(&self.root).driver(vf)
    }

    fn unbind(&mut self, vf: &PciAddress, driver: &str) -> Result<(), RebindError> {
        SysfsBinding::new(&self.root).unbind(vf, driver)?;
        let (net, away) = self.net_dirs(vf);
        if net.exists() {
            std::fs::rename(&net, &away).map_err(|e| RebindError::Read {
                vf: vf.to_string(),
                msg: e.to_string(),
            })?;
        }
        Ok(())
    }

    fn bind(&mut self, vf: &PciAddress, driver: &str) -> Result<(), RebindError> {
        SysfsBinding::new(&self.root).bind(vf, driver)?;
        let k = key(&self.pf, self.vf);
        let stuck = self
            .fake
            .with("bind", |st| {
                let v = st.ib_vfs.entry(k).or_default();
                v.binds += 1;
                v.bound_node = v.node;
                v.bound_port = v.port;
                let stuck = st.stuck_binds > 0;
                st.stuck_binds = st.stuck_binds.saturating_sub(1);
                Ok(stuck)
            })
            .map_err(|e| RebindError::Read {
                vf: vf.to_string(),
                msg: e.to_string(),
            })?;
        let (net, away) = self.net_dirs(vf);
        if !stuck && away.exists() {
            std::fs::rename(&away, &net).map_err(|e| RebindError::Read {
                vf: vf.to_string(),
                msg: e.to_string(),
            })?;
        }
        Ok(())
    }

    fn netdevs(&mut self, vf: &PciAddress) -> Result<Vec<String>, RebindError> {
        SysfsBinding::new(&self.root).netdevs(vf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mac;

    #[test]
    fn fake_records_applies_and_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        let mut f = FileFake::new(&path);
        assert_eq!(f.vf_state("pf", 1).unwrap(), VfState::default());
        f.set("pf", 1, &VfSetting::Trust { on: true }).unwrap();
        assert!(f.vf_state("pf", 1).unwrap().trust);
        let mut st = FakeState::load(&path).unwrap();
        st.fail.insert("vf:mac".into(), libc::EOPNOTSUPP);
        st.fail.insert("move".into(), libc::EIO);
        st.store(&path).unwrap();
        let e = f
            .set(
                "pf",
                1,
                &VfSetting::Mac {
                    mac: Mac([2, 0, 0, 0, 0, 1]),
                },
            )
            .unwrap_err();
        assert_eq!(e.errno, Some(libc::EOPNOTSUPP));
        assert_eq!(f.vf_state("pf", 1).unwrap().mac, Mac::default());
        assert!(f.fault("move").is_err());
        assert!(f.fault("up").is_ok());
        let st = FakeState::load(&path).unwrap();
        assert_eq!(st.calls.len(), 5, "{:?}", st.calls);
    }

    #[test]
    fn ib_model_shows_guids_on_the_pf_at_once_and_in_the_driver_after_a_rebind() {
        let dir = tempfile::tempdir().unwrap();
        let sim = simhost::SimHost::create(dir.path().join("root"), simhost::Profile::Infiniband)
            .unwrap();
        let path = dir.path().join("f.json");
        let mut f = FileFake::new(&path);
        let vf: PciAddress = sim.vf_address(0, 2).parse().unwrap();
        let net = sim
            .root()
            .join("sys/bus/pci/devices")
            .join(vf.as_str())
            .join("net");
        f.set_guid("ib0", 2, GuidKind::Node, 7).unwrap();
        f.set_guid("ib0", 2, GuidKind::Port, 8).unwrap();
        assert_eq!(
            f.vf_guids("ib0").unwrap(),
            vec![(
                2,
                VfGuids {
                    node: Some(7),
                    port: Some(8)
                }
            )]
        );
        let st = FakeState::load(&path).unwrap();
        assert_eq!(
            (st.ib_vfs["ib0/2"].bound_node, st.ib_vfs["ib0/2"].bound_port),
            (0, 0)
        );
        assert_eq!(f.rebind(sim.root(), &vf).unwrap(), sim.vf_netdev(0, 2));
        let st = FakeState::load(&path).unwrap();
        assert_eq!(
            (st.ib_vfs["ib0/2"].bound_node, st.ib_vfs["ib0/2"].bound_port),
            (7, 8)
        );
        assert!(net.exists());
        // a stuck probe: the netdev is gone until the next bind
        let mut st = FakeState::load(&path).unwrap();
        st.stuck_binds = 1;
        st.rebind_timeout_ms = Some(30);
        st.store(&path).unwrap();
        assert!(matches!(
            f.rebind(sim.root(), &vf),
            Err(RebindError::Timeout { .. })
        ));
        assert!(!net.exists());
        f.rebind(sim.root(), &vf).unwrap();
        assert!(net.exists());
        assert_eq!(FakeState::load(&path).unwrap().ib_vfs["ib0/2"].binds, 3);
    }

    #[test]
    fn igb_model_refuses_and_records_vf_macs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        FakeState {
            igb: true,
            ..Default::default()
        }
        .store(&path)
        .unwrap();
        let mut f = FileFake::new(&path);
        let (m1, m2) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        let admin = |f: &mut FileFake, mac| f.set("pf", 0, &VfSetting::Mac { mac }).unwrap();
        // Never up: the netdev MAC stays the VF's business.
        f.netdev_mac("pf", 0, m1).unwrap();
        assert_eq!(f.vf_state("pf", 0).unwrap().mac, Mac::default());
        // Up once: the PF's report stays, but going down and later netdev MAC writes are
        // recorded.
        f.netdev_up("pf", 0).unwrap();
        assert_eq!(f.vf_state("pf", 0).unwrap().mac, Mac::default());
        f.netdev_down("pf", 0, Some(m1)).unwrap();
        assert_eq!(f.vf_state("pf", 0).unwrap().mac, m1);
        f.netdev_mac("pf", 0, m2).unwrap();
        assert_eq!(f.vf_state("pf", 0).unwrap().mac, m2);
        // An admin MAC locks an untrusted VF out, even for the same MAC...
        admin(&mut f, m1);
        let e = f.netdev_mac("pf", 0, m1).unwrap_err();
        assert_eq!(e.errno, Some(libc::EADDRNOTAVAIL));
        assert_eq!(f.vf_state("pf", 0).unwrap().mac, m1);
        // ...but not a trusted one; and 00:00:00:00:00:00 clears the flag.
        f.set("pf", 0, &VfSetting::Trust { on: true }).unwrap();
        f.netdev_mac("pf", 0, m2).unwrap();
        f.set("pf", 0, &VfSetting::Trust { on: false }).unwrap();
        admin(&mut f, Mac::default());
        f.netdev_mac("pf", 0, m1).unwrap();
        assert_eq!(f.vf_state("pf", 0).unwrap().mac, m1);
        let st = FakeState::load(&path).unwrap();
        assert_eq!(
            st.igb_vfs["pf/0"],
            IgbVf {
                admin_mac: false,
                been_up: true
            }
        );
    }
}
