//! The commands: ADD, DEL, CHECK, STATUS, GC (VERSION is answered by the dispatcher).
//!
//! ADD records what it will change in the cache before the first change, then applies
//! the steps in order: VF settings on the PF but the MAC, RDMA device move, link
//! move+rename+MAC+MTU (one message), the admin MAC on the PF, IPAM, addresses, link up,
//! routes. Any failure runs the same teardown DEL uses, limited to the steps that ran,
//! in reverse order.

use crate::cache::{Cache, CacheEntry, HostLink, IbEntry};
use crate::config::{Command, Env, EnvError, Mac, NetConf};
use crate::error::{Error, Result};
use crate::ib::conf::IbConf;
use crate::ib::netlink::GuidKind;
use crate::ipam;
use crate::lock::{Owner, VfLock};
use crate::netlink::{LinkChange, RouteSpec, Rtnl};
use crate::netns::Netns;
use crate::result::{CniResult, Interface, IpConfig};
use crate::sriov::{TestSeam, VfConfigurator, VfSetting, VfState};
use crate::vf::{self, VfTarget};
use rdma_hca::{Host, PciAddress, RdmaNetnsMode};
use serde_json::Value;
use std::path::PathBuf;

/// What a command runs against.
pub struct Plugin<'a> {
    /// The host tree sysfs is read from (`/`, or a fixture root in tests).
    pub host: Host,
    /// VF configuration on the PF (netlink, or the test fake).
    pub vf: &'a mut dyn VfConfigurator,
    /// Fault injection and the VF driver model: [`NoSeam`](crate::sriov::NoSeam) in the
    /// shipped binary.
    pub seam: &'a mut dyn TestSeam,
    /// The data directory (cache files, `lock/`).
    pub data_dir: PathBuf,
}

/// Which steps of an ADD have run (what a teardown must undo).
#[derive(Debug, Default, Clone)]
struct Progress {
    vf_applied: Vec<VfSetting>,
    rdma_moved: Vec<String>,
    link_moved: bool,
    /// The VF netdev's ifindex in the pod, when known.
    pod_index: Option<u32>,
    /// Alternative names dropped before the move.
    dropped_altnames: Vec<String>,
    ipam_done: bool,
    /// An admin MAC found on the VF was cleared before the move (see `add_steps`).
    mac_cleared: bool,
    /// InfiniBand: the GUIDs set (restored from the recorded ones).
    guids_set: Vec<GuidKind>,
    /// InfiniBand: the VF was rebound (rebind again after the restore).
    rebound: bool,
    /// InfiniBand: the VF netdev as found after the rebind, when its ifindex changed.
    relinked: Option<HostLink>,
}

impl Progress {
    fn everything(e: &CacheEntry) -> Progress {
        let mut vf_applied = e.vf_inherited.clone();
        vf_applied.extend(e.vf_planned.iter().cloned());
        Progress {
            vf_applied,
            rdma_moved: e.rdma.clone(),
            link_moved: e.link.is_some(),
            pod_index: e.pod_index.or(e.link.as_ref().map(|l| l.index)),
            dropped_altnames: e.dropped_altnames.clone(),
            ipam_done: e.ipam.is_some(),
            // DEL treats a cached `mac` setting as covering this.
            mac_cleared: false,
            guids_set: if e.ib.as_ref().is_some_and(|i| i.guid.is_some()) {
                GuidKind::BOTH.to_vec()
            } else {
                Vec::new()
            },
            // ADD rebinds only a VF with a netdev (see `add_steps`).
            rebound: e.ib.as_ref().is_some_and(|i| i.guid.is_some()) && e.link.is_some(),
            relinked: None,
        }
    }
}

fn netns_env_err(path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::Env(EnvError {
        var: "CNI_NETNS",
        value: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Whether the VF netdev is still on the host under its name and index.
fn rtnl_link_is(rtnl: &mut Rtnl, l: &HostLink) -> Result<bool> {
    Ok(rtnl
        .link_by_index(l.index)?
        .is_some_and(|h| h.name == l.name))
}

/// The VF settings a config asks for, in the order they are applied, leaving out those
/// the VF already has (and had before any earlier attachment).
pub fn planned_settings(conf: &NetConf, current: &VfState, orig: &VfState) -> Vec<VfSetting> {
    let mut v = Vec::new();
    if let Some(vlan) = conf.vlan {
        v.push(VfSetting::Vlan {
            vlan,
            qos: conf.vlan_qos.unwrap_or(0),
            proto: conf.vlan_proto.unwrap_or(crate::config::VlanProto::Dot1Q),
        });
    }
    if let Some(mac) = conf.mac {
        v.push(VfSetting::Mac { mac });
    }
    if conf.min_tx_rate.is_some() || conf.max_tx_rate.is_some() {
        v.push(VfSetting::Rate {
            min: conf.min_tx_rate.unwrap_or(current.min_tx_rate),
            max: conf.max_tx_rate.unwrap_or(current.max_tx_rate),
        });
    }
    if let Some(s) = conf.spoofchk {
        v.push(VfSetting::Spoofchk { on: s.enabled() });
    }
    if let Some(t) = conf.trust {
        v.push(VfSetting::Trust { on: t.enabled() });
    }
    if let Some(l) = conf.link_state {
        v.push(VfSetting::LinkState { state: l });
    }
    v.retain(|s| !(s.holds_in(current) && s.holds_in(orig)));
    v
}

impl Plugin<'_> {
    fn cache(&self) -> Cache {
        Cache::new(&self.data_dir)
    }

    /// Run one command (not VERSION). Returns the JSON to print, if any.
    pub fn run(&mut self, env: &Env, conf: &NetConf) -> Result<Option<Value>> {
        match env.command {
            Command::Add => self.add(env, conf).map(Some),
            Command::Del => self.del(env, conf).map(|_| None),
            Command::Check => self.check(env, conf).map(|_| None),
            Command::Status => self.status(env, conf).map(|_| None),
            Command::Gc => self.gc(env, conf).map(|_| None),
            Command::Version => Ok(Some(crate::version::version_json(Some(
                conf.cni_version.as_str(),
            )))),
        }
    }

    fn ipam_plugin(&self, env: &Env, conf: &NetConf) -> Result<Option<String>> {
        let Some(ipam) = &conf.ipam else {
            return Ok(None);
        };
        if env.path.is_empty() {
            return Err(Error::Env(EnvError {
                var: "CNI_PATH",
                value: String::new(),
                reason: format!(
                    "missing, and ipam.type {:?} must be looked up in it",
                    ipam.plugin
                ),
            }));
        }
        if ipam::find(&ipam.plugin, &env.path).is_none() {
            return Err(Error::Config(crate::config::ConfigError {
                field: "ipam.type".into(),
                value: format!("\"{}\"", ipam.plugin),
                reason: format!("no executable of that name in CNI_PATH {:?}", env.path),
            }));
        }
        Ok(Some(ipam.plugin.clone()))
    }

    fn add(&mut self, env: &Env, conf: &NetConf) -> Result<Value> {
        let rt0 = crate::netlink::round_trips();
        // Everything below up to the cache write only reads.
        let pci: PciAddress = conf
            .device_id
            .clone()
            .ok_or_else(|| Error::Other("deviceID missing".into()))?;
        let ipam_plugin = self.ipam_plugin(env, conf)?;
        let ns_path = env
            .netns
            .clone()
            .ok_or_else(|| netns_env_err(std::path::Path::new(""), "missing"))?;
        let netns = Netns::open(&ns_path).map_err(|e| netns_env_err(&ns_path, e))?;
        let mut target = vf::resolve(&self.host, &pci)?;
        let rdma_exclusive = self.host.netns_mode()? == RdmaNetnsMode::Exclusive;
        // InfiniBand is decided from the PF's link type in sysfs, never from `type` or
        // the binary's name; its config is checked in full before anything changes.
        let ib_conf = if crate::ib::pf_is_infiniband(&self.host, &target.pf_netdev)? {
            crate::ib::conf::refuse_ethernet_keys(&conf.raw, pci.as_str(), &target.pf_netdev)?;
            let c = IbConf::from_netconf(&conf.raw)?;
            if c.rdma_isolation && !rdma_exclusive {
                return Err(Error::Config(crate::config::ConfigError {
                    field: "rdmaIsolation".into(),
                    value: "true".into(),
                    reason: "needs the host's RDMA subsystem in exclusive netns mode \
                             (rdma system set netns exclusive)"
                        .into(),
                }));
            }
            crate::debug!("VF {pci}: PF {} is InfiniBand ({c:?})", target.pf_netdev);
            Some(c)
        } else {
            None
        };
        if rdma_exclusive {
            target = vf::with_soft_rdma(&self.host, target)?;
        }
        let rdma_exclusive = rdma_exclusive && !target.rdma.is_empty();
        let home = Netns::current().map_err(|e| Error::Other(e.to_string()))?;

        let lock = VfLock::acquire(&self.data_dir, pci.as_str())?;
        let cache = self.cache();
        if cache.load(&env.container_id, &env.ifname)?.is_some() {
            return Err(Error::Busy {
                pci: pci.to_string(),
                reason: format!(
                    "attachment {}/{} already exists (DEL it first)",
                    env.container_id, env.ifname
                ),
            });
        }
        let owner_prev = lock.owner()?;
        let mut rtnl = Rtnl::new()?;
        let mut host_hw_addr = None;
        let host_link = if target.dpdk() {
            None
        } else {
            let name = target.netdev.clone().ok_or_else(|| Error::Busy {
                pci: pci.to_string(),
                reason: format!(
                    "it has no netdev on the host (driver {:?}); attached elsewhere?",
                    target.driver
                ),
            })?;
            let l = rtnl.link_by_name(&name)?.ok_or_else(|| Error::Busy {
                pci: pci.to_string(),
                reason: format!("its netdev {name} is not in the host netns"),
            })?;
            host_hw_addr = l.hw_addr.clone();
            Some(HostLink {
                name: l.name,
                index: l.index,
                mac: l.mac,
                mtu: l.mtu,
                up: l.up,
                altnames: l.altnames,
            })
        };
        let current = self.vf.vf_state(&target.pf_netdev, target.vf_index)?;
        let mut ib_entry = match &ib_conf {
            Some(c) => Some(self.ib_plan(c, &target, host_hw_addr.as_deref())?),
            None => None,
        };
        let mut vf_orig = current.clone();
        let mut link_orig = host_link.clone();
        let mut inherited = Vec::new();
        // An earlier attachment that never got its DEL: restore to what it found.
        if let Some(o) = &owner_prev
            && (o.container_id != env.container_id || o.ifname != env.ifname)
            && let Ok(Some(old)) = cache.load(&o.container_id, &o.ifname)
            && old.device_id == pci.as_str()
        {
            crate::info!(
                "VF {pci} still recorded for {}/{}; keeping its original state as the baseline",
                o.container_id,
                o.ifname
            );
            vf_orig = old.vf_orig.clone();
            if let (Some(now), Some(was)) = (ib_entry.as_mut(), old.ib.as_ref()) {
                now.orig_node = was.orig_node;
                now.orig_port = was.orig_port;
            }
            inherited = old.vf_inherited.clone();
            inherited.extend(old.vf_planned.iter().cloned());
            if let (Some(l), Some(ol)) = (link_orig.as_mut(), old.link.as_ref()) {
                l.name = ol.name.clone();
                l.mac = ol.mac;
                l.mtu = ol.mtu;
            }
        }
        let vf_planned = planned_settings(conf, &current, &vf_orig);
        let mut vf_inherited: Vec<VfSetting> = Vec::new();
        for s in inherited {
            let covered = vf_planned
                .iter()
                .chain(vf_inherited.iter())
                .any(|p| p.name() == s.name());
            if !covered {
                vf_inherited.push(s);
            }
        }
        let entry = CacheEntry {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
            netns: Some(ns_path.display().to_string()),
            net_name: conf.name.clone(),
            device_id: pci.to_string(),
            pf: target.pf_netdev.clone(),
            vf_index: target.vf_index,
            link: link_orig,
            pod_index: None,
            dropped_altnames: Vec::new(),
            set_mac: conf.mac,
            set_mtu: conf.mtu,
            vf_planned,
            vf_inherited,
            vf_orig,
            ib: ib_entry,
            rdma: if rdma_exclusive {
                target.rdma.clone()
            } else {
                Vec::new()
            },
            ipam: ipam_plugin,
            config: conf.raw.clone(),
        };
        cache.store(&entry)?;
        lock.set_owner(Some(&Owner {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        }))?;

        let mut p = Progress::default();
        let out = self.add_steps(
            env,
            conf,
            &target,
            &entry,
            &current,
            host_link.as_ref(),
            &netns,
            &home,
            &mut rtnl,
            &mut p,
        );
        match out {
            Ok(v) => {
                crate::info!(
                    "ADD {}/{} VF {pci} done ({} netlink round trips)",
                    env.container_id,
                    env.ifname,
                    crate::netlink::round_trips() - rt0
                );
                Ok(v)
            }
            Err(e) => {
                crate::warn!("ADD failed: {e}; undoing {p:?}");
                let mut undo = entry.clone();
                if let Some(l) = &p.relinked {
                    undo.link = Some(l.clone());
                }
                let errs = self.teardown(&undo, Some(&netns), &home, &p, env, &conf.raw);
                if errs.is_empty() {
                    let mut more = Vec::new();
                    if let Err(x) = cache.remove(&env.container_id, &env.ifname) {
                        more.push(x);
                    }
                    if let Err(x) = lock.set_owner(owner_prev.as_ref()) {
                        more.push(x);
                    }
                    if more.is_empty() {
                        return Err(e);
                    }
                    more.insert(0, e);
                    Err(Error::Many(more))
                } else {
                    // Keep the cache: the runtime's DEL will finish the undo.
                    let mut all = vec![e];
                    all.extend(errs);
                    Err(Error::Many(all))
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_steps(
        &mut self,
        env: &Env,
        conf: &NetConf,
        target: &VfTarget,
        entry: &CacheEntry,
        current: &VfState,
        cur_link: Option<&HostLink>,
        netns: &Netns,
        home: &Netns,
        rtnl: &mut Rtnl,
        p: &mut Progress,
    ) -> Result<Value> {
        let fault = |seam: &mut dyn TestSeam, step: &str| -> Result<()> {
            seam.fault(step)
                .map_err(|_| Error::Injected(step.to_string()))
        };
        fault(self.seam, "cache")?;
        // The admin MAC goes on the PF only after the netdev has its new MAC: igb refuses
        // any MAC change from an untrusted VF's own side while an admin MAC is set.
        let (admin_mac, settings): (Vec<&VfSetting>, Vec<&VfSetting>) = entry
            .vf_planned
            .iter()
            .partition(|s| matches!(s, VfSetting::Mac { .. }));
        for s in settings {
            self.set_vf(entry, s)?;
            p.vf_applied.push(s.clone());
            fault(self.seam, &format!("after:vf:{}", s.name()))?;
        }
        let mut ib_link = cur_link.cloned();
        if let Some(g) = entry.ib.as_ref().and_then(|i| i.guid) {
            // Node then port GUID, then a rebind so the driver takes them (mlx5 reads
            // them at probe), as ib-sriov-cni does.
            for kind in GuidKind::BOTH {
                self.set_guid(entry, kind, g.as_u64())?;
                p.guids_set.push(kind);
            }
            fault(self.seam, "guid")?;
            // The probe makes a new netdev: move that one (its ifindex may be new; the
            // name DEL restores stays the one found before ADD). A VF on a userspace
            // driver (DPDK) has no netdev to wait for and is not rebound: its user's
            // driver reads the GUIDs when it opens the VF.
            if let Some(l) = ib_link.as_mut() {
                p.rebound = true;
                let name = self.vf.rebind(self.host.root(), &target.pci)?;
                fault(self.seam, "rebind")?;
                let now = rtnl.link_by_name(&name)?.ok_or_else(|| {
                    Error::Other(format!(
                        "VF {} netdev {name} is not in the host netns after the rebind",
                        target.pci
                    ))
                })?;
                if now.index != l.index {
                    l.index = now.index;
                    p.relinked = Some(l.clone());
                }
            }
        }
        let cur_link = ib_link.as_ref();
        // From here on the cache entry (and every later store of it) names the netdev
        // as it is now.
        let relinked_entry;
        let entry = match &p.relinked {
            Some(l) => {
                let mut e2 = entry.clone();
                e2.link = Some(l.clone());
                self.cache().store(&e2)?;
                relinked_entry = e2;
                &relinked_entry
            }
            None => entry,
        };
        for dev in &entry.rdma {
            self.vf
                .rdma_move(dev, home, netns, home)
                .map_err(|source| Error::Rdma {
                    device: dev.clone(),
                    source,
                })?;
            p.rdma_moved.push(dev.clone());
            fault(self.seam, "rdma")?;
        }
        let ns_path = netns.path().display().to_string();
        let mut iface = Interface {
            name: env.ifname.clone(),
            sandbox: Some(ns_path.clone()),
            pci_id: Some(target.pci.to_string()),
            ..Default::default()
        };
        let mut pod: Option<(Rtnl, u32)> = None;
        if let Some(l) = cur_link {
            let mut change = LinkChange {
                index: l.index,
                netns_fd: Some(netns.raw_fd()),
                new_ifindex: Some(l.index as i32),
                name: Some(env.ifname.clone()),
                mac: conf.mac.filter(|m| Some(*m) != l.mac),
                mtu: conf.mtu.filter(|m| *m != l.mtu),
                up: None,
            };
            // An admin MAC already on an untrusted VF (set by hand, or by an attachment
            // whose DEL never came) would make igb refuse the netdev MAC: clear it first.
            let trusted = entry
                .vf_planned
                .iter()
                .find_map(|s| match s {
                    VfSetting::Trust { on } => Some(*on),
                    _ => None,
                })
                .unwrap_or(current.trust);
            if !admin_mac.is_empty() && change.mac.is_some() && !current.mac.is_zero() && !trusted {
                p.mac_cleared = true;
                self.set_vf(
                    entry,
                    &VfSetting::Mac {
                        mac: Mac::default(),
                    },
                )?;
            }
            let mut prtnl = netns
                .run(home, Rtnl::new)
                .map_err(|e| Error::Other(e.to_string()))??;
            let kept_index =
                self.move_link(rtnl, &mut prtnl, &mut change, l, entry, env, &ns_path, p)?;
            if l.up {
                // The move closed it (before the new MAC).
                self.seam.netdev_down(&entry.pf, entry.vf_index, l.mac)?;
            }
            if let Some(m) = change.mac {
                self.seam.netdev_mac(&entry.pf, entry.vf_index, m)?;
            }
            let index = if kept_index {
                l.index
            } else {
                prtnl
                    .link_by_name(&env.ifname)?
                    .ok_or_else(|| {
                        Error::Other(format!(
                            "{} vanished from {ns_path} after the move",
                            env.ifname
                        ))
                    })?
                    .index
            };
            if !kept_index {
                p.pod_index = Some(index);
                let mut e2 = entry.clone();
                e2.pod_index = Some(index);
                e2.dropped_altnames = p.dropped_altnames.clone();
                self.cache().store(&e2)?;
            }
            iface.mac = if entry.ib.is_some() {
                // IPoIB: the 20-byte address as the kernel shows it (it cannot be set).
                prtnl.link_by_index(index)?.and_then(|k| k.hw_addr)
            } else {
                conf.mac.or(l.mac).map(|m| m.to_string())
            };
            iface.mtu = Some(conf.mtu.unwrap_or(l.mtu));
            pod = Some((prtnl, index));
            fault(self.seam, "move")?;
        }
        for s in admin_mac {
            self.set_vf(entry, s)?;
            p.vf_applied.push(s.clone());
            fault(self.seam, &format!("after:vf:{}", s.name()))?;
        }
        let mut ipam_result = CniResult::default();
        if let Some(plugin) = &entry.ipam {
            let call = ipam::Call {
                command: Command::Add,
                env,
            };
            // A failed IPAM ADD cleans up after itself (spec); ours starts after it.
            ipam_result = ipam::exec(plugin, &call, &conf.raw)?.unwrap_or_default();
            p.ipam_done = true;
            fault(self.seam, "ipam")?;
        }
        if let Some((prtnl, index)) = pod.as_mut() {
            let v4 = ipam_result.ips.iter().any(|i| i.address.addr.is_ipv4());
            let v6 = ipam_result.ips.iter().any(|i| !i.address.addr.is_ipv4());
            // Gratuitous ARP / unsolicited NA: the kernel sends them when the link comes
            // up with addresses if arp_notify / ndisc_notify is set.
            let ifname = env.ifname.clone();
            let _ = netns.run(home, || {
                if v4 {
                    let _ =
                        std::fs::write(format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"), "1");
                }
                if v6 {
                    let _ = std::fs::write(
                        format!("/proc/sys/net/ipv6/conf/{ifname}/ndisc_notify"),
                        "1",
                    );
                }
            });
            for ip in &ipam_result.ips {
                prtnl.add_address(*index, &ip.address)?;
            }
            fault(self.seam, "addresses")?;
            prtnl.set_link(
                &LinkChange {
                    index: *index,
                    up: Some(true),
                    ..Default::default()
                },
                &env.ifname,
            )?;
            self.seam.netdev_up(&entry.pf, entry.vf_index)?;
            fault(self.seam, "up")?;
            for r in &ipam_result.routes {
                let gw = r.gw.or_else(|| {
                    ipam_result
                        .ips
                        .iter()
                        .find(|i| i.address.addr.is_ipv4() == r.dst.addr.is_ipv4())
                        .and_then(|i| i.gateway)
                        .filter(|_| r.dst.prefix == 0)
                });
                prtnl.add_route(
                    *index,
                    &RouteSpec {
                        dst: r.dst,
                        gw,
                        priority: r.priority,
                        table: r.table,
                    },
                )?;
            }
            fault(self.seam, "routes")?;
        }
        // Chain: keep what earlier plugins reported, append our interface and IPs.
        let mut result = conf.prev_result.clone().unwrap_or_default();
        let our_index = result.interfaces.len();
        result.interfaces.push(iface);
        for ip in ipam_result.ips {
            result.ips.push(IpConfig {
                interface: Some(our_index),
                ..ip
            });
        }
        result.routes.extend(ipam_result.routes);
        if ipam_result.dns.is_some() {
            result.dns = ipam_result.dns;
        }
        fault(self.seam, "result")?;
        Ok(result.to_json(conf.cni_version))
    }

    /// Move the VF netdev into the pod (renamed, with MAC/MTU) in one message, handling
    /// the two refusals that change nothing: EBUSY (its ifindex is taken in the pod: let
    /// the kernel pick one, after checking the name is free) and EEXIST from a colliding
    /// altname (drop it; DEL puts it back). Returns whether the ifindex was kept.
    #[allow(clippy::too_many_arguments)]
    fn move_link(
        &mut self,
        rtnl: &mut Rtnl,
        prtnl: &mut Rtnl,
        change: &mut LinkChange,
        l: &HostLink,
        entry: &CacheEntry,
        env: &Env,
        ns_path: &str,
        p: &mut Progress,
    ) -> Result<bool> {
        for _ in 0..3 {
            // With IFLA_NEW_IFINDEX the VF keeps its ifindex in the pod, which identifies
            // it there even if the rename fails after the move.
            p.link_moved = true;
            p.pod_index = change.new_ifindex.map(|i| i as u32);
            let err = match rtnl.set_link(change, &l.name) {
                Ok(()) => return Ok(change.new_ifindex.is_some()),
                Err(e) => e,
            };
            if err.errno == Some(libc::EBUSY) && change.new_ifindex.is_some() {
                p.link_moved = false;
                if prtnl.link_by_name(&env.ifname)?.is_some() {
                    return Err(crate::netlink::NlError::errno(
                        "move VF netdev into",
                        format!("{ns_path} as {}", env.ifname),
                        libc::EEXIST,
                    )
                    .into());
                }
                change.new_ifindex = None;
                continue;
            }
            if err.errno == Some(libc::EEXIST)
                && p.dropped_altnames.is_empty()
                && !l.altnames.is_empty()
                && rtnl_link_is(rtnl, l)?
            {
                p.link_moved = false;
                let mut colliding = Vec::new();
                for a in &l.altnames {
                    if prtnl.link_by_name(a)?.is_some() {
                        colliding.push(a.clone());
                    }
                }
                if colliding.is_empty() {
                    return Err(err.into());
                }
                crate::info!(
                    "dropping altnames {colliding:?} of {}: taken in {ns_path}",
                    l.name
                );
                rtnl.del_altnames(l.index, &colliding)?;
                p.dropped_altnames = colliding.clone();
                let mut e2 = entry.clone();
                e2.dropped_altnames = colliding;
                self.cache().store(&e2)?;
                continue;
            }
            // Refusals checked before the move (a name taken in the pod) leave the VF
            // on the host: then there is nothing to move back, and a pod link that
            // happens to have its name and ifindex must not be mistaken for it.
            if rtnl_link_is(rtnl, l)? {
                p.link_moved = false;
            }
            return Err(err.into());
        }
        Err(Error::Other(format!(
            "could not move {} into {ns_path}",
            l.name
        )))
    }

    /// Undo the steps in `p`, newest first, collecting every error; "already gone" counts
    /// as done.
    fn teardown(
        &mut self,
        e: &CacheEntry,
        netns: Option<&Netns>,
        home: &Netns,
        p: &Progress,
        env: &Env,
        conf_raw: &Value,
    ) -> Vec<Error> {
        let mut errs = Vec::new();
        if p.ipam_done
            && let Some(plugin) = &e.ipam
        {
            let call = ipam::Call {
                command: Command::Del,
                env,
            };
            if let Err(x) = ipam::exec(plugin, &call, conf_raw) {
                errs.push(x);
            }
        }
        // The VF MAC: release the admin MAC so the VF may take its netdev MAC back (igb
        // refuses a VF-side change while an admin MAC is set on an untrusted VF), put the
        // netdev back, then give the PF back the MAC it reported before, since once the
        // VF has been up, igb records the netdev MAC the VF writes as the VF's MAC.
        let (macs, others): (Vec<&VfSetting>, Vec<&VfSetting>) = p
            .vf_applied
            .iter()
            .partition(|s| matches!(s, VfSetting::Mac { .. }));
        let admin_mac = macs.last().copied();
        let netdev_back = p.link_moved && e.link.is_some();
        if let Some(s) = admin_mac {
            if netdev_back {
                let clear = VfSetting::Mac {
                    mac: Mac::default(),
                };
                if let Err(x) = self.set_vf(e, &clear) {
                    errs.push(x);
                }
            } else {
                self.restore_vf(e, s, &mut errs);
            }
        }
        if p.link_moved
            && let Some(l) = &e.link
            && let Err(x) = self.restore_link(e, l, p.pod_index, netns, home)
        {
            errs.push(x);
        }
        if !p.dropped_altnames.is_empty()
            && let Some(l) = &e.link
            && let Err(x) = self.restore_altnames(l, &p.dropped_altnames)
        {
            errs.push(x);
        }
        // Read back when the PF may now report another MAC: it was cleared above, or the
        // netdev came back (igbvf resets when it goes down and tells igb its MAC then, as
        // it does for every MAC written back). A non-zero MAC is written only when ADD had
        // one to write (the first two cases): igb would make it an admin MAC the VF can
        // no longer change.
        if p.mac_cleared
            || (netdev_back && admin_mac.is_some())
            || (netdev_back && e.vf_orig.mac.is_zero())
        {
            match self.vf.vf_state(&e.pf, e.vf_index) {
                Ok(st) if st.mac == e.vf_orig.mac => {}
                // (restore_vf takes the value from vf_orig)
                Ok(st) => self.restore_vf(e, &VfSetting::Mac { mac: st.mac }, &mut errs),
                Err(x) => errs.push(x.into()),
            }
        }
        for dev in p.rdma_moved.iter().rev() {
            // A deleted netns hands its RDMA devices back to the host by itself.
            if let Some(ns) = netns
                && let Err(source) = self.vf.rdma_move(dev, ns, home, home)
                && source.errno != Some(libc::ENODEV)
            {
                errs.push(Error::Rdma {
                    device: dev.clone(),
                    source,
                });
            }
        }
        for s in others.iter().rev() {
            self.restore_vf(e, s, &mut errs);
        }
        if let Some(ib) = &e.ib {
            self.restore_guids(e, ib, p, &mut errs);
        }
        errs
    }

    /// What ADD will do to an InfiniBand VF's GUIDs: refuse a GUID another VF of the
    /// same PF has, record what the PF reports for this one. Reads only.
    /// `hw_addr` is the VF netdev's address: on kernels that do not report VF GUIDs its
    /// last 8 bytes are the port GUID to restore (what ib-sriov-cni records).
    fn ib_plan(&mut self, c: &IbConf, target: &VfTarget, hw_addr: Option<&str>) -> Result<IbEntry> {
        let Some((g, field)) = c.guid else {
            return Ok(IbEntry {
                guid: None,
                orig_node: None,
                orig_port: None,
            });
        };
        let table = self.vf.vf_guids(&target.pf_netdev)?;
        if let Some((other, _)) = table.iter().find(|(vf, gs)| {
            *vf != target.vf_index && (gs.node == Some(g.as_u64()) || gs.port == Some(g.as_u64()))
        }) {
            return Err(Error::Config(crate::config::ConfigError {
                field: field.to_string(),
                value: format!("\"{g}\""),
                reason: format!(
                    "GUID already in use by VF {other} of PF {}",
                    target.pf_netdev
                ),
            }));
        }
        let mut mine = table
            .iter()
            .find(|(vf, _)| *vf == target.vf_index)
            .map(|(_, gs)| *gs)
            .unwrap_or_default();
        if mine.port.is_none() {
            let bytes: Option<Vec<u8>> = hw_addr.and_then(|a| {
                a.split(':')
                    .map(|b| u8::from_str_radix(b, 16).ok())
                    .collect()
            });
            mine.port = bytes.and_then(|b| crate::ib::netlink::port_guid_from_ipoib_addr(&b));
        }
        if mine.node.is_none() || mine.port.is_none() {
            crate::warn!(
                "PF {} does not report VF {} GUIDs (kernel before 5.5?): DEL cannot restore those it does not know",
                target.pf_netdev,
                target.vf_index
            );
        }
        Ok(IbEntry {
            guid: Some(g),
            orig_node: mine.node,
            orig_port: mine.port,
        })
    }

    /// Set one GUID of the cached VF; a refusal names it.
    fn set_guid(&mut self, e: &CacheEntry, kind: GuidKind, guid: u64) -> Result<()> {
        self.vf
            .set_guid(&e.pf, e.vf_index, kind, guid)
            .map_err(|source| Error::VfSetting {
                pf: e.pf.clone(),
                vf: e.vf_index,
                setting: format!("{}={}", kind.name(), crate::ib::netlink::fmt_raw(guid)),
                source: Box::new(source),
            })
    }

    /// Put the recorded GUIDs back and rebind so the driver takes them (teardown's last
    /// step: the rebind replaces the netdev restored on the host just before).
    fn restore_guids(&mut self, e: &CacheEntry, ib: &IbEntry, p: &Progress, errs: &mut Vec<Error>) {
        for &kind in p.guids_set.iter().rev() {
            let orig = match kind {
                GuidKind::Node => ib.orig_node,
                GuidKind::Port => ib.orig_port,
            };
            match orig {
                Some(v) => {
                    if let Err(x) = self.set_guid(e, kind, v) {
                        errs.push(x);
                    }
                }
                None => crate::warn!(
                    "VF {} {}: original unknown, left as set",
                    e.device_id,
                    kind.name()
                ),
            }
        }
        if p.rebound {
            match e.device_id.parse::<PciAddress>() {
                Ok(pci) => {
                    if let Err(x) = self.vf.rebind(self.host.root(), &pci) {
                        errs.push(x.into());
                    }
                }
                Err(_) => errs.push(Error::Other(format!(
                    "cached deviceID {:?} is not a PCI address",
                    e.device_id
                ))),
            }
        }
    }

    /// Give the VF netdev on the host back the altnames dropped for the move.
    fn restore_altnames(&mut self, l: &HostLink, names: &[String]) -> Result<()> {
        let mut h = Rtnl::new()?;
        let Some(f) = h.link_by_name(&l.name)? else {
            return Ok(());
        };
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !f.altnames.contains(n))
            .cloned()
            .collect();
        if !missing.is_empty() {
            h.add_altnames(f.index, &missing)?;
        }
        Ok(())
    }

    /// Apply one VF setting; a refusal names it.
    fn set_vf(&mut self, e: &CacheEntry, s: &VfSetting) -> Result<()> {
        self.vf
            .set(&e.pf, e.vf_index, s)
            .map_err(|source| Error::VfSetting {
                pf: e.pf.clone(),
                vf: e.vf_index,
                setting: s.describe(),
                source: Box::new(source),
            })
    }

    /// Put one VF setting back to its value in the cache.
    fn restore_vf(&mut self, e: &CacheEntry, s: &VfSetting, errs: &mut Vec<Error>) {
        if let Err(x) = self.set_vf(e, &s.current(&e.vf_orig)) {
            errs.push(x);
        }
    }

    /// Put the VF netdev back on the host under its old name, MAC, MTU and state.
    fn restore_link(
        &mut self,
        e: &CacheEntry,
        l: &HostLink,
        pod_index: Option<u32>,
        netns: Option<&Netns>,
        home: &Netns,
    ) -> Result<()> {
        if let Some(ns) = netns {
            let mut pod = ns
                .run(home, Rtnl::new)
                .map_err(|x| Error::Other(x.to_string()))??;
            // Only our VF: a same-named link with another ifindex belongs to someone else
            // (e.g. the interface that made our rename fail).
            let mut found = None;
            // With the index unknown (a rename that failed after a move that could not
            // keep it), only the host name left on it identifies the VF.
            for n in [&e.ifname, &l.name] {
                if let Some(f) = pod.link_by_name(n)?
                    && (pod_index == Some(f.index) || (pod_index.is_none() && f.name == l.name))
                {
                    found = Some(f);
                    break;
                }
            }
            if let Some(f) = found {
                let change = LinkChange {
                    index: f.index,
                    netns_fd: Some(home.raw_fd()),
                    new_ifindex: None,
                    name: Some(l.name.clone()),
                    mac: l.mac.filter(|m| f.mac != Some(*m)),
                    mtu: Some(l.mtu).filter(|m| *m != f.mtu),
                    up: l.up.then_some(true),
                };
                pod.set_link(&change, &f.name)?;
                // Leaving the pod closes it (the kernel does so before the new MAC).
                self.netdev_changed(e, l, f.up.then_some(f.mac), change.mac)?;
                return Ok(());
            }
        }
        // Not in the pod: the netns is gone (the kernel returned the VF to the host,
        // keeping the pod-side name) or it was already moved back.
        let mut h = Rtnl::new()?;
        let mut found = h.link_by_name(&l.name)?;
        if found.is_none() {
            let sysfs_names = e
                .device_id
                .parse::<PciAddress>()
                .ok()
                .and_then(|a| self.host.function(&a).ok())
                .map(|f| f.netdevs)
                .unwrap_or_default();
            for n in sysfs_names.iter().chain(std::iter::once(&e.ifname)) {
                if let Some(f) = h.link_by_name(n)?
                    && (f.index == l.index || sysfs_names.contains(n))
                {
                    found = Some(f);
                    break;
                }
            }
        }
        let Some(f) = found else {
            crate::warn!(
                "VF netdev {} (pod name {}) is neither in the pod nor on the host; nothing to restore",
                l.name,
                e.ifname
            );
            return Ok(());
        };
        let rename = f.name != l.name;
        let mac = l.mac.filter(|m| f.mac != Some(*m));
        let mtu = Some(l.mtu).filter(|m| *m != f.mtu);
        if !rename && mac.is_none() && mtu.is_none() && f.up == l.up {
            return Ok(());
        }
        if f.up {
            h.set_link(
                &LinkChange {
                    index: f.index,
                    up: Some(false),
                    ..Default::default()
                },
                &f.name,
            )?;
        }
        h.set_link(
            &LinkChange {
                index: f.index,
                name: rename.then(|| l.name.clone()),
                mac,
                mtu,
                up: l.up.then_some(true),
                ..Default::default()
            },
            &f.name,
        )?;
        self.netdev_changed(e, l, f.up.then_some(f.mac), mac)
    }

    /// Tell the configurator what the VF driver saw of a netdev restore (test seam): it
    /// went down (with the MAC it had), got `mac`, came up as before.
    fn netdev_changed(
        &mut self,
        e: &CacheEntry,
        l: &HostLink,
        down: Option<Option<Mac>>,
        mac: Option<Mac>,
    ) -> Result<()> {
        if let Some(had) = down {
            self.seam.netdev_down(&e.pf, e.vf_index, had)?;
        }
        if let Some(m) = mac {
            self.seam.netdev_mac(&e.pf, e.vf_index, m)?;
        }
        if l.up {
            self.seam.netdev_up(&e.pf, e.vf_index)?;
        }
        Ok(())
    }

    fn del(&mut self, env: &Env, conf: &NetConf) -> Result<()> {
        let cache = self.cache();
        let Some(entry) = cache.load(&env.container_id, &env.ifname)? else {
            // Nothing cached: ADD never finished (or DEL already ran). Release IPAM,
            // which is idempotent, and succeed.
            if let Some(ipam) = &conf.ipam
                && !env.path.is_empty()
                && ipam::find(&ipam.plugin, &env.path).is_some()
            {
                let call = ipam::Call {
                    command: Command::Del,
                    env,
                };
                ipam::exec(&ipam.plugin, &call, &conf.raw)?;
            }
            return Ok(());
        };
        self.release(env, &entry, &conf.raw)
    }

    /// DEL one cached attachment (also used by GC).
    fn release(&mut self, env: &Env, entry: &CacheEntry, conf_raw: &Value) -> Result<()> {
        let cache = self.cache();
        let lock = VfLock::acquire(&self.data_dir, &entry.device_id)?;
        let owner = lock.owner()?;
        let mine = owner
            .as_ref()
            .is_none_or(|o| o.container_id == entry.container_id && o.ifname == entry.ifname);
        let home = Netns::current().map_err(|e| Error::Other(e.to_string()))?;
        let netns = env.netns.as_ref().and_then(|p| Netns::open(p).ok());
        let p = if mine {
            Progress::everything(entry)
        } else {
            crate::info!(
                "VF {} now belongs to {:?}; releasing only IPAM for {}/{}",
                entry.device_id,
                owner,
                entry.container_id,
                entry.ifname
            );
            Progress {
                ipam_done: entry.ipam.is_some(),
                ..Default::default()
            }
        };
        let errs = self.teardown(entry, netns.as_ref(), &home, &p, env, conf_raw);
        if !errs.is_empty() {
            return Err(Error::Many(errs));
        }
        cache.remove(&entry.container_id, &entry.ifname)?;
        if mine {
            lock.set_owner(None)?;
        }
        Ok(())
    }

    fn check(&mut self, env: &Env, conf: &NetConf) -> Result<()> {
        if !conf.cni_version.has_check() {
            return Err(Error::IncompatibleVersion {
                requested: conf.cni_version.to_string(),
                reason: "CHECK needs cniVersion 0.4.0 or later".into(),
            });
        }
        let prev = conf.prev_result.as_ref().ok_or_else(|| {
            Error::Config(crate::config::ConfigError {
                field: "prevResult".into(),
                value: "<missing>".into(),
                reason: "CHECK needs the result of ADD".into(),
            })
        })?;
        let entry = self
            .cache()
            .load(&env.container_id, &env.ifname)?
            .ok_or_else(|| {
                Error::CheckMismatch(vec![format!(
                    "no attachment {}/{} is cached",
                    env.container_id, env.ifname
                )])
            })?;
        let mut diffs = Vec::new();
        if let Some(ipam) = &entry.ipam {
            let call = ipam::Call {
                command: Command::Check,
                env,
            };
            ipam::exec(ipam, &call, &conf.raw)?;
        }
        if entry.link.is_some() {
            let ns_path = env.netns.clone().unwrap_or_default();
            let ns = Netns::open(&ns_path).map_err(|e| netns_env_err(&ns_path, e))?;
            let home = Netns::current().map_err(|e| Error::Other(e.to_string()))?;
            let mut pod = ns
                .run(&home, Rtnl::new)
                .map_err(|e| Error::Other(e.to_string()))??;
            match pod.link_by_name(&env.ifname)? {
                None => diffs.push(format!(
                    "interface {} not found in {}",
                    env.ifname,
                    ns_path.display()
                )),
                Some(l) => {
                    let ours = prev.interfaces.iter().position(|i| i.name == env.ifname);
                    let want_mac = conf
                        .mac
                        .map(|m| m.to_string())
                        .or_else(|| ours.and_then(|i| prev.interfaces[i].mac.clone()));
                    // IPoIB: the 20-byte address ADD reported from the kernel.
                    let have_mac = if entry.ib.is_some() {
                        l.hw_addr.clone()
                    } else {
                        l.mac.map(|m| m.to_string())
                    };
                    if let Some(w) = want_mac
                        && have_mac.as_deref() != Some(w.as_str())
                    {
                        diffs.push(format!(
                            "{} MAC is {:?}, expected {w}",
                            env.ifname, have_mac
                        ));
                    }
                    if let Some(m) = conf.mtu
                        && l.mtu != m
                    {
                        diffs.push(format!("{} MTU is {}, expected {m}", env.ifname, l.mtu));
                    }
                    if !l.up {
                        diffs.push(format!("{} is down", env.ifname));
                    }
                    let have = pod.addresses(l.index)?;
                    for ip in prev
                        .ips
                        .iter()
                        .filter(|ip| ip.interface.is_none() || ip.interface == ours)
                    {
                        if !have.contains(&ip.address) {
                            diffs.push(format!("{} lacks address {}", env.ifname, ip.address));
                        }
                    }
                }
            }
        }
        if let Some(g) = entry.ib.as_ref().and_then(|i| i.guid) {
            let table = self.vf.vf_guids(&entry.pf)?;
            let have = table
                .iter()
                .find(|(vf, _)| *vf == entry.vf_index)
                .map(|(_, gs)| *gs)
                .unwrap_or_default();
            for kind in GuidKind::BOTH {
                let h = have.get(kind);
                if h.is_some_and(|h| h != g.as_u64()) {
                    diffs.push(format!(
                        "VF {} on {}: expected {}={g}, PF reports {}",
                        entry.vf_index,
                        entry.pf,
                        kind.name(),
                        crate::ib::netlink::fmt_raw(h.unwrap_or_default())
                    ));
                }
            }
        }
        let st = self.vf.vf_state(&entry.pf, entry.vf_index)?;
        for s in &entry.vf_planned {
            if !s.holds_in(&st) {
                diffs.push(format!(
                    "VF {} on {}: expected {}, PF reports {}",
                    entry.vf_index,
                    entry.pf,
                    s.describe(),
                    s.current(&st).describe()
                ));
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(Error::CheckMismatch(diffs))
        }
    }

    fn status(&mut self, env: &Env, conf: &NetConf) -> Result<()> {
        if let Some(ipam) = &conf.ipam
            && ipam::find(&ipam.plugin, &env.path).is_none()
        {
            return Err(Error::NotAvailable(format!(
                "IPAM plugin {:?} not found in CNI_PATH {:?}",
                ipam.plugin, env.path
            )));
        }
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| Error::io("create", &self.data_dir, e))?;
        Ok(())
    }

    fn gc(&mut self, env: &Env, conf: &NetConf) -> Result<()> {
        let valid = conf.valid_attachments.clone().ok_or_else(|| {
            Error::Config(crate::config::ConfigError {
                field: "cni.dev/valid-attachments".into(),
                value: "<missing>".into(),
                reason: "GC needs the list of attachments to keep".into(),
            })
        })?;
        let mut errs = Vec::new();
        for item in self.cache().list()? {
            let entry = match item {
                Ok(e) => e,
                Err(x) => {
                    errs.push(x);
                    continue;
                }
            };
            if entry.net_name != conf.name
                || valid
                    .iter()
                    .any(|a| a.container_id == entry.container_id && a.ifname == entry.ifname)
            {
                continue;
            }
            crate::info!(
                "GC: releasing stale attachment {}/{}",
                entry.container_id,
                entry.ifname
            );
            let stale_env = Env {
                command: Command::Del,
                container_id: entry.container_id.clone(),
                ifname: entry.ifname.clone(),
                netns: entry.netns.as_ref().map(PathBuf::from),
                path: env.path.clone(),
                args: Vec::new(),
            };
            let cfg = entry.config.clone();
            if let Err(x) = self.release(&stale_env, &entry, &cfg) {
                errs.push(x);
            }
        }
        // The spec: GC goes on to the delegated IPAM plugin, with the same config.
        if let Some(ipam) = &conf.ipam {
            match ipam::gc(&ipam.plugin, env, &conf.raw) {
                Ok(true) => crate::info!("GC forwarded to IPAM {}", ipam.plugin),
                Ok(false) => crate::debug!(
                    "IPAM {} predates GC (no spec version from 1.1.0 on): not forwarded",
                    ipam.plugin
                ),
                Err(x) => errs.push(x),
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Error::Many(errs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> NetConf {
        let s = format!(r#"{{"cniVersion":"1.0.0","name":"n","deviceID":"0000:3b:00.2"{extra}}}"#);
        NetConf::parse(s.as_bytes(), true).unwrap()
    }

    #[test]
    fn planned_settings_skip_what_already_holds() {
        let cur = VfState::default();
        let c = conf(r#","vlan":0,"spoofchk":"on","trust":"on","max_tx_rate":100"#);
        // vlan 0 and spoofchk on are already so: only trust and rate are planned.
        let p = planned_settings(&c, &cur, &cur);
        assert_eq!(
            p,
            vec![
                VfSetting::Rate { min: 0, max: 100 },
                VfSetting::Trust { on: true }
            ]
        );
        // ...unless an earlier attachment left the VF differently from its baseline.
        let mut orig = cur.clone();
        orig.vlan = 7;
        let p = planned_settings(&c, &cur, &orig);
        assert_eq!(p[0].name(), "vlan");
        // No settings in the config: nothing touches the PF.
        assert!(planned_settings(&conf(""), &cur, &cur).is_empty());
    }
}
