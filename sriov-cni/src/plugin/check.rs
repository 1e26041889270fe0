//! CHECK and STATUS.

use super::*;

impl Plugin<'_> {
    pub(super) fn check(&mut self, env: &Env, conf: &NetConf) -> Result<()> {
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
            let mut pod = self.links.in_netns(&ns, &home)?;
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

    pub(super) fn status(&mut self, env: &Env, conf: &NetConf) -> Result<()> {
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
}
