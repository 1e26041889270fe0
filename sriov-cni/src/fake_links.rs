//! TEST ONLY (cargo feature `test-fake`): a recording double of [`Links`] for the
//! unprivileged lifecycle tests. It keeps links, addresses and routes per netns in
//! memory, applies a [`LinkChange`] in the kernel's order (netns move with its EEXIST
//! and EBUSY checks before anything changes, then MAC, MTU, name, admin state) and
//! records every call, one line per netlink round trip the kernel implementation makes.
//!
//! Namespaces are keyed by the path the plugin opened them by (`host` for the host), so
//! tests may use several paths of their own netns (`/proc/self/ns/net`,
//! `/proc/thread-self/ns/net`, ...) as distinct pods without root.

use crate::config::Mac;

use crate::links::{LinkHandle, Links};
use crate::netlink::{Link, LinkChange, NlError, RouteSpec};
use crate::netns::Netns;
use crate::result::IpNet;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::RawFd;
use std::rc::Rc;

/// The key of the host netns.
pub const HOST: &str = "host";

/// One link of the double, with what is configured on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    /// The link as `link_by_*` reports it.
    pub link: Link,
    /// Its addresses.
    pub addrs: Vec<IpNet>,
    /// Routes through it.
    pub routes: Vec<RouteSpec>,
}

/// Everything the double knows.
#[derive(Debug, Default)]
pub struct World {
    /// Links per netns key ([`HOST`], or the path a pod netns was opened by).
    pub netns: BTreeMap<String, Vec<FakeLink>>,
    /// Every call, in order: `<netns> <op> <target>`.
    pub calls: Vec<String>,
    /// Refusals to come: the first call whose line starts with a key fails with its
    /// errno, and the entry is used up.
    pub fail: Vec<(String, i32)>,
    fds: HashMap<RawFd, String>,
    next_index: u32,
}

impl World {
    fn links(&mut self, ns: &str) -> &mut Vec<FakeLink> {
        self.netns.entry(ns.to_string()).or_default()
    }

    fn find(&self, ns: &str, name: &str) -> Option<&FakeLink> {
        self.netns
            .get(ns)?
            .iter()
            .find(|l| l.link.name == name || l.link.altnames.iter().any(|a| a == name))
    }

    fn name_taken(&self, ns: &str, name: &str) -> bool {
        self.find(ns, name).is_some()
    }

    fn record(&mut self, ns: &str, op: &str, target: &str) -> Result<(), NlError> {
        let line = format!("{ns} {op} {target}");
        let failed = self
            .fail
            .iter()
            .position(|(k, _)| line.starts_with(k.as_str()))
            .map(|i| self.fail.remove(i).1);
        self.calls.push(line);
        match failed {
            Some(errno) => Err(NlError::errno(op, target, errno)),
            None => Ok(()),
        }
    }

    /// Delete a pod netns: its links go back to the host as a physical VF's do (under
    /// their name when free there, else `dev<ifindex>`), down and unaddressed.
    pub fn delete_netns(&mut self, ns: &str) {
        for mut l in self.netns.remove(ns).unwrap_or_default() {
            if self.name_taken(HOST, &l.link.name) {
                l.link.name = format!("dev{}", l.link.index);
            }
            l.link.up = false;
            l.addrs.clear();
            l.routes.clear();
            self.links(HOST).push(l);
        }
    }

    /// A driver re-probe: the link `name` in `ns` comes back with a new ifindex, down
    /// (what a rebind does to a real VF netdev). Returns the new ifindex.
    pub fn reprobe(&mut self, ns: &str, name: &str) -> Option<u32> {
        self.next_index += 1;
        let index = 1000 + self.next_index;
        let l = self.links(ns).iter_mut().find(|l| l.link.name == name)?;
        l.link.index = index;
        l.link.up = false;
        l.addrs.clear();
        l.routes.clear();
        Some(index)
    }

    fn apply(&mut self, ns: &str, c: &LinkChange, target: &str) -> Result<(), NlError> {
        let err = |errno| Err(NlError::errno("set link", target, errno));
        let Some(pos) = self
            .netns
            .get(ns)
            .and_then(|v| v.iter().position(|l| l.link.index == c.index))
        else {
            return err(libc::ENODEV);
        };
        let mut ns = ns.to_string();
        let mut pos = pos;
        if let Some(fd) = c.netns_fd {
            let Some(to) = self.fds.get(&fd).cloned() else {
                return err(libc::EBADF);
            };
            if to != ns {
                let l = self.netns[&ns][pos].clone();
                // The kernel's checks, all before the move: the name (a new one if given
                // and the current one is taken), the altnames, the ifindex.
                if self.name_taken(&to, &l.link.name) {
                    match &c.name {
                        Some(n) if !self.name_taken(&to, n) => {}
                        _ => return err(libc::EEXIST),
                    }
                }
                if l.link.altnames.iter().any(|a| self.name_taken(&to, a)) {
                    return err(libc::EEXIST);
                }
                let index = match c.new_ifindex {
                    Some(i) if self.links(&to).iter().any(|x| x.link.index == i as u32) => {
                        return err(libc::EBUSY);
                    }
                    Some(i) => i as u32,
                    None if self.links(&to).iter().any(|x| x.link.index == l.link.index) => {
                        self.next_index += 1;
                        1000 + self.next_index
                    }
                    None => l.link.index,
                };
                let mut l = self.links(&ns).remove(pos);
                if self.name_taken(&to, &l.link.name)
                    && let Some(n) = &c.name
                {
                    l.link.name = n.clone();
                }
                l.link.index = index;
                // Leaving a netns closes the link and flushes its addresses.
                l.link.up = false;
                l.addrs.clear();
                l.routes.clear();
                let v = self.links(&to);
                v.push(l);
                pos = v.len() - 1;
                ns = to;
            }
        }
        {
            let l = &mut self.links(&ns)[pos].link;
            if let Some(m) = c.mac {
                l.mac = Some(m);
                l.hw_addr = Some(m.to_string());
            }
            if let Some(m) = c.mtu {
                l.mtu = m;
            }
        }
        if let Some(n) = &c.name {
            let mine = self.netns[&ns][pos].link.name == *n;
            if !mine && self.name_taken(&ns, n) {
                return err(libc::EEXIST);
            }
            self.links(&ns)[pos].link.name = n.clone();
        }
        if let Some(up) = c.up {
            self.links(&ns)[pos].link.up = up;
        }
        Ok(())
    }
}

/// The double: clones share one [`World`].
#[derive(Debug, Clone, Default)]
pub struct FakeLinks(pub Rc<RefCell<World>>);

impl FakeLinks {
    /// An empty world.
    pub fn new() -> FakeLinks {
        FakeLinks::default()
    }

    /// Add a link to netns `ns` (a VF netdev on the host, or something in a pod);
    /// returns its ifindex.
    pub fn add_link(&self, ns: &str, name: &str, mac: Mac, up: bool) -> u32 {
        let mut w = self.0.borrow_mut();
        w.next_index += 1;
        let index = w.next_index;
        w.links(ns).push(FakeLink {
            link: Link {
                index,
                name: name.into(),
                mac: Some(mac),
                mtu: 1500,
                up,
                altnames: Vec::new(),
                hw_addr: Some(mac.to_string()),
            },
            addrs: Vec::new(),
            routes: Vec::new(),
        });
        index
    }

    /// Run `f` on the world.
    pub fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.0.borrow_mut())
    }

    /// The links of one netns, sorted by name.
    pub fn links(&self, ns: &str) -> Vec<FakeLink> {
        let mut v = self.0.borrow().netns.get(ns).cloned().unwrap_or_default();
        v.sort_by(|a, b| a.link.name.cmp(&b.link.name));
        v
    }

    /// The number of calls so far (the kernel implementation's round trips).
    pub fn calls(&self) -> usize {
        self.0.borrow().calls.len()
    }
}

struct Handle {
    world: FakeLinks,
    ns: String,
}

impl Links for FakeLinks {
    fn host(&mut self) -> crate::Result<Box<dyn LinkHandle>> {
        Ok(Box::new(Handle {
            world: self.clone(),
            ns: HOST.into(),
        }))
    }

    fn in_netns(&mut self, ns: &Netns, home: &Netns) -> crate::Result<Box<dyn LinkHandle>> {
        let key = ns.path().display().to_string();
        let mut w = self.0.borrow_mut();
        w.fds.insert(ns.raw_fd(), key.clone());
        w.fds.insert(home.raw_fd(), HOST.into());
        w.links(&key);
        Ok(Box::new(Handle {
            world: self.clone(),
            ns: key,
        }))
    }
}

impl Handle {
    fn get(&self, f: impl Fn(&FakeLink) -> bool) -> Option<Link> {
        let w = self.world.0.borrow();
        w.netns
            .get(&self.ns)?
            .iter()
            .find(|l| f(l))
            .map(|l| l.link.clone())
    }

    fn on<T>(&self, index: u32, f: impl FnOnce(&mut FakeLink) -> T) -> Result<T, NlError> {
        let mut w = self.world.0.borrow_mut();
        w.links(&self.ns)
            .iter_mut()
            .find(|l| l.link.index == index)
            .map(f)
            .ok_or_else(|| NlError::errno("find link", index.to_string(), libc::ENODEV))
    }

    fn record(&self, op: &str, target: &str) -> Result<(), NlError> {
        self.world.0.borrow_mut().record(&self.ns, op, target)
    }
}

impl LinkHandle for Handle {
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        self.record("get_link", name)?;
        let w = self.world.0.borrow();
        Ok(w.find(&self.ns, name).map(|l| l.link.clone()))
    }

    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NlError> {
        self.record("get_link", &index.to_string())?;
        Ok(self.get(|l| l.link.index == index))
    }

    fn set_link(&mut self, c: &LinkChange, target: &str) -> Result<(), NlError> {
        self.record("set_link", target)?;
        self.world.0.borrow_mut().apply(&self.ns, c, target)
    }

    fn del_altnames(&mut self, index: u32, names: &[String]) -> Result<(), NlError> {
        self.record("del_altnames", &names.join(","))?;
        self.on(index, |l| l.link.altnames.retain(|a| !names.contains(a)))
    }

    fn add_altnames(&mut self, index: u32, names: &[String]) -> Result<(), NlError> {
        self.record("add_altnames", &names.join(","))?;
        let ns = self.ns.clone();
        if names
            .iter()
            .any(|n| self.world.0.borrow().name_taken(&ns, n))
        {
            return Err(NlError::errno(
                "add altnames",
                names.join(","),
                libc::EEXIST,
            ));
        }
        self.on(index, |l| l.link.altnames.extend(names.iter().cloned()))
    }

    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NlError> {
        self.record("get_addrs", &index.to_string())?;
        self.on(index, |l| l.addrs.clone())
    }

    fn add_address(&mut self, index: u32, addr: &IpNet) -> Result<(), NlError> {
        self.record("add_addr", &addr.to_string())?;
        let dup = self.on(index, |l| l.addrs.contains(addr))?;
        if dup {
            return Err(NlError::errno(
                "add address",
                addr.to_string(),
                libc::EEXIST,
            ));
        }
        self.on(index, |l| l.addrs.push(*addr))
    }

    fn add_route(&mut self, index: u32, r: &RouteSpec) -> Result<(), NlError> {
        self.record("add_route", &r.dst.to_string())?;
        self.on(index, |l| l.routes.push(r.clone()))
    }

    fn announce(&mut self, _ifname: &str, _v4: bool, _v6: bool) {}
}
