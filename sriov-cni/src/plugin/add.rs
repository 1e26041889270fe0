//! ADD: read and plan, record the cache entry, apply the steps, undo them on failure.

use super::steps::{self, AddCx, Done};
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
        let mut rtnl = self.links.host()?;
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

        let steps = steps::plan(&entry, host_link.as_ref(), &current, conf);
        let ns_display = netns.path().display().to_string();
        let mut cx = AddCx {
            env,
            conf,
            target: &target,
            netns: &netns,
            home: &home,
            rtnl,
            entry,
            link: host_link,
            pod: None,
            iface: Interface {
                name: env.ifname.clone(),
                sandbox: Some(ns_display),
                pci_id: Some(target.pci.to_string()),
                ..Default::default()
            },
            ipam: CniResult::default(),
        };
        let mut journal = Vec::new();
        let out = self
            .apply_all(&steps, &mut cx, &mut journal)
            .and_then(|()| {
                let (iface, ipam) = (std::mem::take(&mut cx.iface), std::mem::take(&mut cx.ipam));
                self.result(conf, iface, ipam)
            });
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
                crate::warn!("ADD failed: {e}; undoing {journal:?}");
                // The pod socket goes before the undo (which opens its own).
                drop(cx.pod.take());
                let errs = self.undo(&cx.entry, &journal, Some(&netns), &home, env, &conf.raw);
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

    /// The result: what earlier plugins reported (a chain), then our interface and IPs.
    fn result(&mut self, conf: &NetConf, iface: Interface, ipam: CniResult) -> Result<Value> {
        let mut result = conf.prev_result.clone().unwrap_or_default();
        let our_index = result.interfaces.len();
        result.interfaces.push(iface);
        for ip in ipam.ips {
            result.ips.push(IpConfig {
                interface: Some(our_index),
                ..ip
            });
        }
        result.routes.extend(ipam.routes);
        if ipam.dns.is_some() {
            result.dns = ipam.dns;
        }
        self.fault("result")?;
        Ok(result.to_json(conf.cni_version))
    }

    /// Move the VF netdev into the pod (renamed, with MAC/MTU) in one message, handling
    /// the two refusals that change nothing: EBUSY (its ifindex is taken in the pod: let
    /// the kernel pick one, after checking the name is free) and EEXIST from a colliding
    /// altname (drop it; DEL puts it back). Returns whether the ifindex was kept. The
    /// journal holds the move while the VF may be in the pod.
    pub(super) fn move_link(
        &mut self,
        cx: &mut AddCx,
        prtnl: &mut dyn LinkHandle,
        change: &mut LinkChange,
        l: &HostLink,
        ns_path: &str,
        journal: &mut Vec<Done>,
    ) -> Result<bool> {
        let not_moved = |j: &mut Vec<Done>| {
            if matches!(j.last(), Some(Done::Move { .. })) {
                j.pop();
            }
        };
        let env = cx.env;
        for _ in 0..3 {
            // With IFLA_NEW_IFINDEX the VF keeps its ifindex in the pod, which identifies
            // it there even if the rename fails after the move.
            not_moved(journal);
            journal.push(Done::Move {
                pod_index: change.new_ifindex.map(|i| i as u32),
            });
            let err = match cx.rtnl.set_link(change, &l.name) {
                Ok(()) => return Ok(change.new_ifindex.is_some()),
                Err(e) => e,
            };
            if err.errno == Some(libc::EBUSY) && change.new_ifindex.is_some() {
                not_moved(journal);
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
                && cx.entry.dropped_altnames.is_empty()
                && !l.altnames.is_empty()
                && rtnl_link_is(cx.rtnl.as_mut(), l)?
            {
                not_moved(journal);
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
                cx.rtnl.del_altnames(l.index, &colliding)?;
                journal.push(Done::Altnames(colliding.clone()));
                cx.entry.dropped_altnames = colliding;
                self.cache().store(&cx.entry)?;
                continue;
            }
            // Refusals checked before the move (a name taken in the pod) leave the VF
            // on the host: then there is nothing to move back, and a pod link that
            // happens to have its name and ifindex must not be mistaken for it.
            if rtnl_link_is(cx.rtnl.as_mut(), l)? {
                not_moved(journal);
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
