//! The steps ADD applies, in order, each with its undo; one executor runs them and one
//! undo loop takes them back (after a failed ADD and on DEL alike).
//!
//! The plan comes from the cache entry written before the first change, so a DEL that
//! finds only the cache (ADD killed part-way) undoes every planned step: each undo
//! treats "already as it was" as done. The executor keeps a journal of the steps that
//! ran, pushed before a change that can fail half-done (the move, the rebind) and after
//! a change whose refusal changes nothing (a VF setting the driver refused).

use super::*;

/// One change ADD makes, in the order ADD makes them.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    /// A VF setting on the PF other than the admin MAC.
    Vf(VfSetting),
    /// InfiniBand: node and port GUID, then a rebind so the driver takes them (mlx5
    /// reads them at probe), as ib-sriov-cni does.
    Guids(u64),
    /// An RDMA device into the pod (exclusive RDMA netns mode).
    Rdma(String),
    /// An admin MAC already on an untrusted VF (set by hand, or by an attachment whose
    /// DEL never came) would make igb refuse the netdev MAC: cleared before the move.
    ClearMac,
    /// The VF netdev into the pod, renamed, with its MAC and MTU (one message).
    Move,
    /// The admin MAC on the PF, after the netdev has its new MAC: igb refuses any MAC
    /// change from an untrusted VF's own side while an admin MAC is set.
    AdminMac(VfSetting),
    /// IPAM ADD (a failed one cleans up after itself, per the spec).
    Ipam,
    /// The IPAM addresses on the pod netdev (undone by the move back).
    Addresses,
    /// The pod netdev up (undone by the move back).
    Up,
    /// The IPAM routes (undone by the move back).
    Routes,
}

impl Step {
    /// The fault-injection point right after the step (test seam; the GUID step has
    /// its own two inside).
    fn fault_point(&self) -> Option<String> {
        Some(match self {
            Step::Vf(s) | Step::AdminMac(s) => format!("after:vf:{}", s.name()),
            Step::Guids(_) | Step::ClearMac => return None,
            Step::Rdma(_) => "rdma".into(),
            Step::Move => "move".into(),
            Step::Ipam => "ipam".into(),
            Step::Addresses => "addresses".into(),
            Step::Up => "up".into(),
            Step::Routes => "routes".into(),
        })
    }
}

/// A step that ran (or may have run part-way), with what its undo needs.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Done {
    /// A VF setting applied (restored from `vf_orig`).
    Vf(VfSetting),
    /// InfiniBand GUIDs set (restored from the recorded ones), and whether the VF was
    /// rebound (rebound again after the restore).
    Guids {
        /// The GUIDs set, in order.
        set: Vec<GuidKind>,
        /// The VF was rebound.
        rebound: bool,
    },
    /// An RDMA device moved into the pod.
    Rdma(String),
    /// The admin MAC cleared before the move.
    ClearMac,
    /// Altnames of the VF netdev dropped because they were taken in the pod.
    Altnames(Vec<String>),
    /// The VF netdev (maybe) in the pod, with its ifindex there when known.
    Move {
        /// Its ifindex in the pod.
        pod_index: Option<u32>,
    },
    /// The admin MAC set on the PF.
    AdminMac(VfSetting),
    /// IPAM ADD ran.
    Ipam,
}

/// The steps ADD applies for `e`: `link` is the VF netdev as found on the host,
/// `current` the VF's state on the PF before ADD.
pub(super) fn plan(
    e: &CacheEntry,
    link: Option<&HostLink>,
    current: &VfState,
    conf: &NetConf,
) -> Vec<Step> {
    let (admin_mac, settings): (Vec<&VfSetting>, Vec<&VfSetting>) = e
        .vf_planned
        .iter()
        .partition(|s| matches!(s, VfSetting::Mac { .. }));
    let mut steps: Vec<Step> = settings.into_iter().cloned().map(Step::Vf).collect();
    if let Some(g) = e.ib.as_ref().and_then(|i| i.guid) {
        steps.push(Step::Guids(g.as_u64()));
    }
    steps.extend(e.rdma.iter().cloned().map(Step::Rdma));
    if let Some(l) = link {
        let trusted = e
            .vf_planned
            .iter()
            .find_map(|s| match s {
                VfSetting::Trust { on } => Some(*on),
                _ => None,
            })
            .unwrap_or(current.trust);
        let netdev_mac = conf.mac.filter(|m| Some(*m) != l.mac);
        if !admin_mac.is_empty() && netdev_mac.is_some() && !current.mac.is_zero() && !trusted {
            steps.push(Step::ClearMac);
        }
        steps.push(Step::Move);
    }
    steps.extend(admin_mac.into_iter().cloned().map(Step::AdminMac));
    if e.ipam.is_some() {
        steps.push(Step::Ipam);
    }
    if link.is_some() {
        steps.extend([Step::Addresses, Step::Up, Step::Routes]);
    }
    steps
}

/// What DEL undoes for a cached attachment: every step ADD planned, as if all ran
/// (ADD may have been killed after any of them). `mine` false: the VF belongs to
/// another attachment now, only IPAM is released.
pub(super) fn journal_of(e: &CacheEntry, mine: bool) -> Vec<Done> {
    let mut j = Vec::new();
    if mine {
        let all: Vec<&VfSetting> = e.vf_inherited.iter().chain(&e.vf_planned).collect();
        j.extend(
            all.iter()
                .filter(|s| !matches!(s, VfSetting::Mac { .. }))
                .map(|s| Done::Vf((*s).clone())),
        );
        if e.ib.as_ref().is_some_and(|i| i.guid.is_some()) {
            j.push(Done::Guids {
                set: GuidKind::BOTH.to_vec(),
                // ADD rebinds only a VF with a netdev.
                rebound: e.link.is_some(),
            });
        }
        j.extend(e.rdma.iter().cloned().map(Done::Rdma));
        if !e.dropped_altnames.is_empty() {
            j.push(Done::Altnames(e.dropped_altnames.clone()));
        }
        if let Some(l) = &e.link {
            j.push(Done::Move {
                pod_index: e.pod_index.or(Some(l.index)),
            });
        }
        // A cached `mac` covers an admin MAC ADD may have cleared.
        if let Some(s) = all
            .iter()
            .rev()
            .find(|s| matches!(s, VfSetting::Mac { .. }))
        {
            j.push(Done::AdminMac((*s).clone()));
        }
    }
    if e.ipam.is_some() {
        j.push(Done::Ipam);
    }
    j
}

/// What the steps of one ADD work on, and what they find out on the way.
pub(super) struct AddCx<'c> {
    pub(super) env: &'c Env,
    pub(super) conf: &'c NetConf,
    pub(super) target: &'c VfTarget,
    pub(super) netns: &'c Netns,
    pub(super) home: &'c Netns,
    /// Route netlink in the host netns.
    pub(super) rtnl: Box<dyn LinkHandle>,
    /// The cache entry as stored now (a new ifindex after a rebind or the move is
    /// recorded before the next change).
    pub(super) entry: CacheEntry,
    /// The VF netdev on the host, as it is now (`None` in DPDK mode).
    pub(super) link: Option<HostLink>,
    /// Route netlink in the pod and the VF netdev's ifindex there, after the move.
    pub(super) pod: Option<(Box<dyn LinkHandle>, u32)>,
    /// Our interface in the result.
    pub(super) iface: Interface,
    /// What IPAM ADD returned.
    pub(super) ipam: CniResult,
}

/// The journal entry for the move, when it is the newest.
fn moved(journal: &mut [Done]) -> Option<&mut Option<u32>> {
    match journal.last_mut() {
        Some(Done::Move { pod_index }) => Some(pod_index),
        _ => None,
    }
}

impl Plugin<'_> {
    /// Fail here when the test seam says so (never in what we ship).
    pub(super) fn fault(&mut self, point: &str) -> Result<()> {
        self.seam
            .fault(point)
            .map_err(|_| Error::Injected(point.to_string()))
    }

    /// The executor: apply `steps` in order, journaling each before its change can
    /// leave a trace. On error the journal holds what the undo must take back.
    pub(super) fn apply_all(
        &mut self,
        steps: &[Step],
        cx: &mut AddCx,
        journal: &mut Vec<Done>,
    ) -> Result<()> {
        self.fault("cache")?;
        for step in steps {
            self.apply(step, cx, journal)?;
            if let Some(point) = step.fault_point() {
                self.fault(&point)?;
            }
        }
        Ok(())
    }

    fn apply(&mut self, step: &Step, cx: &mut AddCx, journal: &mut Vec<Done>) -> Result<()> {
        match step {
            Step::Vf(s) | Step::AdminMac(s) => {
                // A refused setting changed nothing: journaled once applied.
                self.set_vf(&cx.entry, s)?;
                journal.push(match step {
                    Step::AdminMac(_) => Done::AdminMac(s.clone()),
                    _ => Done::Vf(s.clone()),
                });
            }
            Step::Guids(g) => {
                journal.push(Done::Guids {
                    set: Vec::new(),
                    rebound: false,
                });
                for kind in GuidKind::BOTH {
                    self.set_guid(&cx.entry, kind, *g)?;
                    if let Some(Done::Guids { set, .. }) = journal.last_mut() {
                        set.push(kind);
                    }
                }
                self.fault("guid")?;
                // The probe makes a new netdev: move that one (its ifindex may be new;
                // the name DEL restores stays the one found before ADD). A VF on a
                // userspace driver (DPDK) has no netdev to wait for and is not rebound:
                // its user's driver reads the GUIDs when it opens the VF.
                if let Some(l) = cx.link.as_mut() {
                    if let Some(Done::Guids { rebound, .. }) = journal.last_mut() {
                        *rebound = true;
                    }
                    let name = self.vf.rebind(self.host.root(), &cx.target.pci)?;
                    self.fault("rebind")?;
                    let now = cx.rtnl.link_by_name(&name)?.ok_or_else(|| {
                        Error::Other(format!(
                            "VF {} netdev {name} is not in the host netns after the rebind",
                            cx.target.pci
                        ))
                    })?;
                    if now.index != l.index {
                        l.index = now.index;
                        cx.entry.link = Some(l.clone());
                        self.cache().store(&cx.entry)?;
                    }
                }
            }
            Step::Rdma(dev) => {
                self.vf
                    .rdma_move(dev, cx.home, cx.netns, cx.home)
                    .map_err(|source| Error::Rdma {
                        device: dev.clone(),
                        source,
                    })?;
                journal.push(Done::Rdma(dev.clone()));
            }
            Step::ClearMac => {
                journal.push(Done::ClearMac);
                let clear = VfSetting::Mac {
                    mac: Mac::default(),
                };
                self.set_vf(&cx.entry, &clear)?;
            }
            Step::Move => self.move_step(cx, journal)?,
            Step::Ipam => {
                if let Some(plugin) = cx.entry.ipam.clone() {
                    let call = ipam::Call {
                        command: Command::Add,
                        env: cx.env,
                    };
                    cx.ipam = ipam::exec(&plugin, &call, &cx.conf.raw)?.unwrap_or_default();
                    journal.push(Done::Ipam);
                }
            }
            Step::Addresses => {
                let Some((prtnl, index)) = cx.pod.as_mut() else {
                    return Ok(());
                };
                let v4 = cx.ipam.ips.iter().any(|i| i.address.addr.is_ipv4());
                let v6 = cx.ipam.ips.iter().any(|i| !i.address.addr.is_ipv4());
                // Gratuitous ARP / unsolicited NA: the kernel sends them when the link
                // comes up with addresses if arp_notify / ndisc_notify is set.
                prtnl.announce(&cx.env.ifname, v4, v6);
                for ip in &cx.ipam.ips {
                    prtnl.add_address(*index, &ip.address)?;
                }
            }
            Step::Up => {
                let Some((prtnl, index)) = cx.pod.as_mut() else {
                    return Ok(());
                };
                prtnl.set_link(
                    &LinkChange {
                        index: *index,
                        up: Some(true),
                        ..Default::default()
                    },
                    &cx.env.ifname,
                )?;
                self.seam.netdev_up(&cx.entry.pf, cx.entry.vf_index)?;
            }
            Step::Routes => {
                let Some((prtnl, index)) = cx.pod.as_mut() else {
                    return Ok(());
                };
                for r in &cx.ipam.routes {
                    let gw = r.gw.or_else(|| {
                        cx.ipam
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
            }
        }
        Ok(())
    }

    /// Step::Move: into the pod, then what the result reports of it.
    fn move_step(&mut self, cx: &mut AddCx, journal: &mut Vec<Done>) -> Result<()> {
        let Some(l) = cx.link.clone() else {
            return Ok(());
        };
        let mut change = LinkChange {
            index: l.index,
            netns_fd: Some(cx.netns.raw_fd()),
            new_ifindex: Some(l.index as i32),
            name: Some(cx.env.ifname.clone()),
            mac: cx.conf.mac.filter(|m| Some(*m) != l.mac),
            mtu: cx.conf.mtu.filter(|m| *m != l.mtu),
            up: None,
        };
        let ns_path = cx.netns.path().display().to_string();
        let mut prtnl = self.links.in_netns(cx.netns, cx.home)?;
        let kept_index = self.move_link(cx, prtnl.as_mut(), &mut change, &l, &ns_path, journal)?;
        let (pf, vf) = (cx.entry.pf.clone(), cx.entry.vf_index);
        if l.up {
            // The move closed it (before the new MAC).
            self.seam.netdev_down(&pf, vf, l.mac)?;
        }
        if let Some(m) = change.mac {
            self.seam.netdev_mac(&pf, vf, m)?;
        }
        let index = if kept_index {
            l.index
        } else {
            let index = prtnl
                .link_by_name(&cx.env.ifname)?
                .ok_or_else(|| {
                    Error::Other(format!(
                        "{} vanished from {ns_path} after the move",
                        cx.env.ifname
                    ))
                })?
                .index;
            if let Some(p) = moved(journal) {
                *p = Some(index);
            }
            cx.entry.pod_index = Some(index);
            self.cache().store(&cx.entry)?;
            index
        };
        cx.iface.mac = if cx.entry.ib.is_some() {
            // IPoIB: the 20-byte address as the kernel shows it (it cannot be set).
            prtnl.link_by_index(index)?.and_then(|k| k.hw_addr)
        } else {
            cx.conf.mac.or(l.mac).map(|m| m.to_string())
        };
        cx.iface.mtu = Some(cx.conf.mtu.unwrap_or(l.mtu));
        cx.pod = Some((prtnl, index));
        Ok(())
    }

    /// The undo loop: take back what `journal` records, newest first, collecting every
    /// error; "already as it was" counts as done. `e` is the cache entry as stored.
    pub(super) fn undo(
        &mut self,
        e: &CacheEntry,
        journal: &[Done],
        netns: Option<&Netns>,
        home: &Netns,
        env: &Env,
        conf_raw: &Value,
    ) -> Vec<Error> {
        let mut errs = Vec::new();
        let netdev_back =
            e.link.is_some() && journal.iter().any(|d| matches!(d, Done::Move { .. }));
        let admin_mac = journal.iter().any(|d| matches!(d, Done::AdminMac(_)));
        let cleared = journal.contains(&Done::ClearMac);
        // Read back when the PF may now report another MAC: it was cleared, or the
        // netdev came back (igbvf resets when it goes down and tells igb its MAC then,
        // as it does for every MAC written back). A non-zero MAC is written only when
        // ADD had one to write (the first two cases): igb would make it an admin MAC the
        // VF can no longer change. Done once the netdev is back, before the PF settings.
        let mut read_back =
            !(cleared || (netdev_back && admin_mac) || (netdev_back && e.vf_orig.mac.is_zero()));
        // The GUID restore and its rebind come last: the rebind replaces the netdev
        // restored on the host, and the driver reads the GUIDs at probe.
        let mut guids = None;
        for d in journal.iter().rev() {
            if !read_back && matches!(d, Done::Rdma(_) | Done::Vf(_) | Done::Guids { .. }) {
                read_back = true;
                self.read_back_mac(e, &mut errs);
            }
            match d {
                Done::Ipam => {
                    if let Some(plugin) = &e.ipam {
                        let call = ipam::Call {
                            command: Command::Del,
                            env,
                        };
                        if let Err(x) = ipam::exec(plugin, &call, conf_raw) {
                            errs.push(x);
                        }
                    }
                }
                // Release the admin MAC so the VF may take its netdev MAC back (igb
                // refuses a VF-side change while an admin MAC is set on an untrusted
                // VF); the read-back then gives the PF back the MAC it reported before,
                // since once the VF has been up igb records the netdev MAC the VF
                // writes as the VF's MAC.
                Done::AdminMac(s) => {
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
                Done::Move { pod_index } => {
                    if let Some(l) = &e.link
                        && let Err(x) = self.restore_link(e, l, *pod_index, netns, home)
                    {
                        errs.push(x);
                    }
                }
                Done::Altnames(names) => {
                    if let Some(l) = &e.link
                        && let Err(x) = self.restore_altnames(l, names)
                    {
                        errs.push(x);
                    }
                }
                Done::ClearMac => {}
                Done::Rdma(dev) => {
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
                Done::Vf(s) => self.restore_vf(e, s, &mut errs),
                Done::Guids { set, rebound } => guids = Some((set, *rebound)),
            }
        }
        if !read_back {
            self.read_back_mac(e, &mut errs);
        }
        if let (Some(ib), Some((set, rebound))) = (&e.ib, guids) {
            self.restore_guids(e, ib, set, rebound, &mut errs);
        }
        errs
    }

    /// Give the PF back the VF MAC it reported before ADD, if it reports another now.
    fn read_back_mac(&mut self, e: &CacheEntry, errs: &mut Vec<Error>) {
        match self.vf.vf_state(&e.pf, e.vf_index) {
            Ok(st) if st.mac == e.vf_orig.mac => {}
            // (restore_vf takes the value from vf_orig)
            Ok(st) => self.restore_vf(e, &VfSetting::Mac { mac: st.mac }, errs),
            Err(x) => errs.push(x.into()),
        }
    }

    /// Set one GUID of the cached VF; a refusal names it.
    pub(super) fn set_guid(&mut self, e: &CacheEntry, kind: GuidKind, guid: u64) -> Result<()> {
        self.vf
            .set_guid(&e.pf, e.vf_index, kind, guid)
            .map_err(|source| Error::VfSetting {
                pf: e.pf.clone(),
                vf: e.vf_index,
                setting: format!("{}={}", kind.name(), crate::ib::netlink::fmt_raw(guid)),
                source: Box::new(source),
            })
    }

    /// Put the recorded GUIDs back and rebind so the driver takes them.
    fn restore_guids(
        &mut self,
        e: &CacheEntry,
        ib: &IbEntry,
        set: &[GuidKind],
        rebound: bool,
        errs: &mut Vec<Error>,
    ) {
        for &kind in set.iter().rev() {
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
        if rebound {
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
    pub(super) fn restore_altnames(&mut self, l: &HostLink, names: &[String]) -> Result<()> {
        let mut h = self.links.host()?;
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
    pub(super) fn set_vf(&mut self, e: &CacheEntry, s: &VfSetting) -> Result<()> {
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
    pub(super) fn restore_vf(&mut self, e: &CacheEntry, s: &VfSetting, errs: &mut Vec<Error>) {
        if let Err(x) = self.set_vf(e, &s.current(&e.vf_orig)) {
            errs.push(x);
        }
    }

    /// Put the VF netdev back on the host under its old name, MAC, MTU and state.
    pub(super) fn restore_link(
        &mut self,
        e: &CacheEntry,
        l: &HostLink,
        pod_index: Option<u32>,
        netns: Option<&Netns>,
        home: &Netns,
    ) -> Result<()> {
        if let Some(ns) = netns {
            let mut pod = self.links.in_netns(ns, home)?;
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
        let mut h = self.links.host()?;
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
    pub(super) fn netdev_changed(
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
}
