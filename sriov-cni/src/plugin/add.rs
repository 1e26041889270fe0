//! ADD: read and plan, record the cache entry, apply the steps, undo them on failure.

use super::steps::Progress;
use super::*;

impl Plugin<'_> {
    pub(super) fn add(&mut self, env: &Env, conf: &NetConf) -> Result<Value> {
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
    pub(super) fn add_steps(
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
    pub(super) fn move_link(
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

    /// What ADD will do to an InfiniBand VF's GUIDs: refuse a GUID another VF of the
    /// same PF has, record what the PF reports for this one. Reads only.
    /// `hw_addr` is the VF netdev's address: on kernels that do not report VF GUIDs its
    /// last 8 bytes are the port GUID to restore (what ib-sriov-cni records).
    pub(super) fn ib_plan(
        &mut self,
        c: &IbConf,
        target: &VfTarget,
        hw_addr: Option<&str>,
    ) -> Result<IbEntry> {
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
}
