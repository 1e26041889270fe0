//! The steps ADD applies and their undo, shared by a failed ADD and DEL.

use super::*;

/// Which steps of an ADD have run (what a teardown must undo).
#[derive(Debug, Default, Clone)]
pub(super) struct Progress {
    pub(super) vf_applied: Vec<VfSetting>,
    pub(super) rdma_moved: Vec<String>,
    pub(super) link_moved: bool,
    /// The VF netdev's ifindex in the pod, when known.
    pub(super) pod_index: Option<u32>,
    /// Alternative names dropped before the move.
    pub(super) dropped_altnames: Vec<String>,
    pub(super) ipam_done: bool,
    /// An admin MAC found on the VF was cleared before the move (see `add_steps`).
    pub(super) mac_cleared: bool,
    /// InfiniBand: the GUIDs set (restored from the recorded ones).
    pub(super) guids_set: Vec<GuidKind>,
    /// InfiniBand: the VF was rebound (rebind again after the restore).
    pub(super) rebound: bool,
    /// InfiniBand: the VF netdev as found after the rebind, when its ifindex changed.
    pub(super) relinked: Option<HostLink>,
}

impl Progress {
    pub(super) fn everything(e: &CacheEntry) -> Progress {
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

impl Plugin<'_> {
    /// Undo the steps in `p`, newest first, collecting every error; "already gone" counts
    /// as done.
    pub(super) fn teardown(
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

    /// Put the recorded GUIDs back and rebind so the driver takes them (teardown's last
    /// step: the rebind replaces the netdev restored on the host just before).
    pub(super) fn restore_guids(
        &mut self,
        e: &CacheEntry,
        ib: &IbEntry,
        p: &Progress,
        errs: &mut Vec<Error>,
    ) {
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
    pub(super) fn restore_altnames(&mut self, l: &HostLink, names: &[String]) -> Result<()> {
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
