//! Simulated hosts: writes a directory tree that reads like a real node's `/sys`, `/dev`
//! and `/proc` to anything that takes a root (the `rdma-hca` reader, the device plugin,
//! the CNI).
//!
//! The layout follows the kernel's: device directories under
//! `sys/devices/pci0000:XX/<addr>`, `sys/bus/pci/devices/<addr>` as relative links to
//! them, `physfn -> ../<pf>`, `virtfnN -> ../<vf>`,
//! `driver -> ../../../bus/pci/drivers/<drv>`, `iommu_group -> ../../../kernel/iommu_groups/N`,
//! `sys/class/{net,infiniband,infiniband_verbs,infiniband_mad}/*` as links into the device
//! directories, regular files standing in for `/dev/infiniband/*` char devices, and
//! `proc/net/route` with a default route.
//!
//! Profiles ([`Profile`]) give ready-made hosts; [`SimHost`] mutates one afterwards (VF
//! count, link state, driver binding) the way the kernel would.

pub mod netlab;
pub mod skip;

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A temporary directory for a host tree: on `/dev/shm` when there is one, because a
/// tree is thousands of small files (the 1024-VF profile takes ~1.5 s on tmpfs and over a
/// minute on this machine's disk-backed `/tmp`).
pub fn tempdir() -> io::Result<tempfile::TempDir> {
    let base = Path::new("/dev/shm");
    if base.is_dir() {
        tempfile::Builder::new().prefix("simhost").tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
}

/// Mellanox vendor id.
pub const MLX_VENDOR: &str = "15b3";

/// Which driver a simulated VF is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfBinding {
    /// `mlx5_core`: has a netdev and an RDMA device.
    Mlx5,
    /// `vfio-pci`: no netdev, has an IOMMU group and `/dev/vfio/<group>`.
    Vfio,
    /// No driver.
    Unbound,
}

/// One simulated PF.
#[derive(Debug, Clone)]
pub struct PfSpec {
    /// PCI domain:bus, e.g. `0000:3b`.
    pub bus: String,
    /// devfn of the PF on that bus (0 for port 1, 1 for port 2).
    pub devfn: u32,
    /// devfn of its VF 0 (the rest follow with stride 1).
    pub first_vf_devfn: u32,
    /// PF netdev name.
    pub netdev: String,
    /// VF netdev name prefix (VF i gets `<prefix>i`).
    pub vf_netdev_prefix: String,
    /// PCI device id of the PF.
    pub device: String,
    /// PCI device id of its VFs.
    pub vf_device: String,
    /// NUMA node, or -1.
    pub numa_node: i32,
    /// ARPHRD link type: 1 ether, 32 infiniband.
    pub link_type: u32,
    /// `sriov_totalvfs`.
    pub total_vfs: u32,
    /// The VFs to create (their count is `sriov_numvfs`).
    pub vfs: Vec<VfBinding>,
    /// Whether the PF netdev is up.
    pub up: bool,
}

/// A ready-made host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Dual-port ConnectX-6 Dx Ethernet: 2 PFs (NUMA 0 and 1) with 8 VFs each; the first
    /// PF carries the default route.
    Cx6Dx,
    /// ConnectX-6 InfiniBand: 2 PFs (link type 32) with 4 VFs each.
    Infiniband,
    /// ConnectX-5 with 8 VFs: VFs 0-3 on mlx5_core, 4-5 on vfio-pci, 6-7 unbound.
    Mixed,
    /// 16 PFs x 64 VFs = 1024 VFs, for benchmarks.
    Large,
}

impl Profile {
    /// All profiles.
    pub const ALL: [Profile; 4] = [
        Profile::Cx6Dx,
        Profile::Infiniband,
        Profile::Mixed,
        Profile::Large,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Cx6Dx => "cx6dx",
            Profile::Infiniband => "infiniband",
            Profile::Mixed => "mixed",
            Profile::Large => "large",
        }
    }

    /// Parse a command-line name.
    pub fn from_name(s: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The PFs of this profile, and the netdev carrying the default route.
    pub fn spec(self) -> (Vec<PfSpec>, Option<String>) {
        let eth = |bus: &str, devfn, first, n: &str, numa, nvf: usize| PfSpec {
            bus: bus.into(),
            devfn,
            first_vf_devfn: first,
            netdev: n.into(),
            vf_netdev_prefix: format!("{n}v"),
            device: "101d".into(),
            vf_device: "101e".into(),
            numa_node: numa,
            link_type: 1,
            total_vfs: nvf.max(8) as u32,
            vfs: vec![VfBinding::Mlx5; nvf],
            up: true,
        };
        match self {
            Profile::Cx6Dx => (
                vec![
                    eth("0000:3b", 0, 2, "ens1f0", 0, 8),
                    eth("0000:3b", 1, 10, "ens1f1", 1, 8),
                ],
                Some("ens1f0".into()),
            ),
            Profile::Infiniband => {
                let ib = |devfn, first, n: &str, numa| PfSpec {
                    device: "101b".into(),
                    vf_device: "101c".into(),
                    link_type: 32,
                    total_vfs: 16,
                    vfs: vec![VfBinding::Mlx5; 4],
                    ..eth("0000:5e", devfn, first, n, numa, 4)
                };
                (vec![ib(0, 2, "ib0", 0), ib(1, 6, "ib1", 0)], None)
            }
            Profile::Mixed => {
                let mut pf = eth("0000:af", 0, 2, "ens2f0", 1, 8);
                pf.device = "1017".into();
                pf.vf_device = "1018".into();
                pf.vfs = [
                    [VfBinding::Mlx5; 4].as_slice(),
                    &[VfBinding::Vfio; 2],
                    &[VfBinding::Unbound; 2],
                ]
                .concat();
                (vec![pf], Some("eno1".into()))
            }
            Profile::Large => (
                (0..16u32)
                    .map(|i| {
                        let bus = format!("0000:{:02x}", 0x10 + i);
                        let mut pf = eth(
                            &bus,
                            0,
                            2,
                            &format!("enp{}s0f0", 16 + i),
                            (i / 8) as i32,
                            64,
                        );
                        pf.total_vfs = 64;
                        pf
                    })
                    .collect(),
                Some("enp16s0f0".into()),
            ),
        }
    }
}

/// A simulated host tree on disk.
#[derive(Debug, Clone)]
pub struct SimHost {
    root: PathBuf,
    pfs: Vec<PfSpec>,
    next_rdma: u32,
    next_iommu: u32,
}

fn pci_addr(bus: &str, devfn: u32) -> String {
    format!("{bus}:{:02x}.{}", devfn / 8, devfn % 8)
}

fn write(path: &Path, content: &str) -> io::Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(path, format!("{content}\n"))
}

fn link(target: &str, path: &Path) -> io::Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    let _ = fs::remove_file(path);
    symlink(target, path)
}

fn mac_for(seed: u32) -> String {
    format!(
        "0c:42:a1:{:02x}:{:02x}:{:02x}",
        (seed >> 16) & 0xff,
        (seed >> 8) & 0xff,
        seed & 0xff
    )
}

impl SimHost {
    /// Write `profile` under `root` (created if needed).
    pub fn create(root: impl Into<PathBuf>, profile: Profile) -> io::Result<SimHost> {
        let (pfs, default_route) = profile.spec();
        SimHost::create_with(root, pfs, default_route.as_deref())
    }

    /// Write a host with the given PFs under `root`; `default_route` names the netdev that
    /// carries the default route (it need not be one of the PFs).
    pub fn create_with(
        root: impl Into<PathBuf>,
        pfs: Vec<PfSpec>,
        default_route: Option<&str>,
    ) -> io::Result<SimHost> {
        let root = root.into();
        let mut host = SimHost {
            root,
            pfs: pfs.clone(),
            next_rdma: 0,
            next_iommu: 10,
        };
        for d in ["mlx5_core", "vfio-pci"] {
            fs::create_dir_all(host.root.join("sys/bus/pci/drivers").join(d))?;
        }
        write(
            &host.root.join("sys/class/infiniband_verbs/abi_version"),
            "6",
        )?;
        write(&host.root.join("sys/class/infiniband_mad/abi_version"), "5")?;
        write(
            &host.root.join("sys/module/ib_core/parameters/netns_mode"),
            "Y",
        )?;
        write(&host.root.join("dev/infiniband/rdma_cm"), "")?;
        // loopback, a virtual netdev with no PCI device
        let lo = host.root.join("sys/devices/virtual/net/lo");
        write(&lo.join("type"), "772")?;
        write(&lo.join("operstate"), "unknown")?;
        write(&lo.join("address"), "00:00:00:00:00:00")?;
        link(
            "../../devices/virtual/net/lo",
            &host.root.join("sys/class/net/lo"),
        )?;
        // PFs first (mlx5 numbers PF RDMA devices before VFs), then VFs.
        for pf in &pfs {
            let addr = pci_addr(&pf.bus, pf.devfn);
            let rdma = host.alloc_rdma();
            host.write_function(&addr, &pf.device, pf.numa_node, Some("mlx5_core"), None)?;
            let dir = host.dev_dir(&addr);
            write(&dir.join("sriov_totalvfs"), &pf.total_vfs.to_string())?;
            write(&dir.join("sriov_numvfs"), "0")?;
            host.add_netdev(
                &addr,
                &pf.netdev,
                pf.link_type,
                pf.up,
                &mac_for(pf.devfn + 0x100 * host.bus_num(&pf.bus)),
            )?;
            host.add_rdma(&addr, &rdma)?;
        }
        for (i, pf) in pfs.iter().enumerate() {
            host.set_num_vfs_idx(i, pf.vfs.len() as u32)?;
        }
        let mut route = String::from(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
        );
        if let Some(dr) = default_route {
            route.push_str(&format!(
                "{dr}\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
            ));
            route.push_str(&format!(
                "{dr}\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
            ));
        }
        write(&host.root.join("proc/net/route"), route.trim_end())?;
        write(
            &host.root.join("proc/net/ipv6_route"),
            "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001       lo",
        )?;
        Ok(host)
    }

    /// Open an existing tree written by [`SimHost::create`] with `profile`.
    pub fn open(root: impl Into<PathBuf>, profile: Profile) -> SimHost {
        let root = root.into();
        let (pfs, _) = profile.spec();
        let next_rdma = fs::read_dir(root.join("sys/class/infiniband"))
            .map(|d| d.count() as u32)
            .unwrap_or(0);
        SimHost {
            root,
            pfs,
            next_rdma: next_rdma + 1000,
            next_iommu: 1000,
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The PCI address of PF `i`.
    pub fn pf_address(&self, i: usize) -> String {
        pci_addr(&self.pfs[i].bus, self.pfs[i].devfn)
    }

    /// The PCI address of VF `vf` of PF `pf`.
    pub fn vf_address(&self, pf: usize, vf: u32) -> String {
        pci_addr(&self.pfs[pf].bus, self.pfs[pf].first_vf_devfn + vf)
    }

    /// The netdev name of VF `vf` of PF `pf`.
    pub fn vf_netdev(&self, pf: usize, vf: u32) -> String {
        format!("{}{vf}", self.pfs[pf].vf_netdev_prefix)
    }

    /// The PFs this host was built from.
    pub fn pfs(&self) -> &[PfSpec] {
        &self.pfs
    }

    fn bus_num(&self, bus: &str) -> u32 {
        u32::from_str_radix(bus.rsplit(':').next().unwrap_or("0"), 16).unwrap_or(0)
    }

    fn pci_root(&self, addr: &str) -> String {
        // devices sit directly under their host bridge: sys/devices/pci0000:XX/<addr>
        let dom = &addr[..4];
        format!(
            "pci{dom}:{:02x}",
            self.bus_num(&addr[..7]).saturating_sub(1)
        )
    }

    /// `<root>/sys/devices/pciDDDD:BB/<addr>`.
    pub fn dev_dir(&self, addr: &str) -> PathBuf {
        self.root
            .join("sys/devices")
            .join(self.pci_root(addr))
            .join(addr)
    }

    fn alloc_rdma(&mut self) -> String {
        let n = self.next_rdma;
        self.next_rdma += 1;
        format!("mlx5_{n}")
    }

    fn write_function(
        &self,
        addr: &str,
        device: &str,
        numa: i32,
        driver: Option<&str>,
        iommu_group: Option<u32>,
    ) -> io::Result<()> {
        let dir = self.dev_dir(addr);
        fs::create_dir_all(&dir)?;
        write(&dir.join("vendor"), &format!("0x{MLX_VENDOR}"))?;
        write(&dir.join("device"), &format!("0x{device}"))?;
        write(&dir.join("class"), "0x020000")?;
        self.write_uevent(addr, driver)?;
        write(&dir.join("numa_node"), &numa.to_string())?;
        if let Some(d) = driver {
            link(
                &format!("../../../bus/pci/drivers/{d}"),
                &dir.join("driver"),
            )?;
            link(
                &format!("../../../../devices/{}/{addr}", self.pci_root(addr)),
                &self.root.join("sys/bus/pci/drivers").join(d).join(addr),
            )?;
        }
        if let Some(g) = iommu_group {
            fs::create_dir_all(
                self.root
                    .join(format!("sys/kernel/iommu_groups/{g}/devices")),
            )?;
            link(
                &format!("../../../kernel/iommu_groups/{g}"),
                &dir.join("iommu_group"),
            )?;
            write(&self.root.join(format!("dev/vfio/{g}")), "")?;
            write(&self.root.join("dev/vfio/vfio"), "")?;
        }
        link(
            &format!("../../../devices/{}/{addr}", self.pci_root(addr)),
            &self.root.join("sys/bus/pci/devices").join(addr),
        )?;
        Ok(())
    }

    /// Write the device's `uevent` as the kernel renders it (driver first, then the PCI
    /// keys), from its `vendor`/`device` files and the bound `driver`.
    fn write_uevent(&self, addr: &str, driver: Option<&str>) -> io::Result<()> {
        let dir = self.dev_dir(addr);
        let id = |f: &str| -> io::Result<String> {
            Ok(fs::read_to_string(dir.join(f))?
                .trim()
                .trim_start_matches("0x")
                .to_uppercase())
        };
        let mut ev = String::new();
        if let Some(d) = driver {
            ev.push_str(&format!("DRIVER={d}\n"));
        }
        ev.push_str(&format!(
            "PCI_CLASS=20000\nPCI_ID={}:{}\nPCI_SUBSYS_ID=15B3:0016\nPCI_SLOT_NAME={addr}\nMODALIAS=pci:v0000{}d0000{}sv000015B3sd00000016bc02sc00i00",
            id("vendor")?,
            id("device")?,
            id("vendor")?,
            id("device")?
        ));
        write(&dir.join("uevent"), &ev)
    }

    /// Give PCI function `addr` a netdev `name` (ARPHRD `link_type`).
    pub fn add_netdev(
        &self,
        addr: &str,
        name: &str,
        link_type: u32,
        up: bool,
        mac: &str,
    ) -> io::Result<()> {
        let nd = self.dev_dir(addr).join("net").join(name);
        fs::create_dir_all(&nd)?;
        write(&nd.join("type"), &link_type.to_string())?;
        write(&nd.join("operstate"), if up { "up" } else { "down" })?;
        let mac = if link_type == 32 {
            format!("00:00:10:87:fe:80:00:00:00:00:00:00:{mac}:00:00")
        } else {
            mac.to_string()
        };
        write(&nd.join("address"), &mac)?;
        link(&format!("../../../{addr}"), &nd.join("device"))?;
        link(
            &format!("../../devices/{}/{addr}/net/{name}", self.pci_root(addr)),
            &self.root.join("sys/class/net").join(name),
        )
    }

    /// Remove netdev `name` of PCI function `addr` (as when it moves to another netns).
    pub fn remove_netdev(&self, addr: &str, name: &str) -> io::Result<()> {
        let _ = fs::remove_file(self.root.join("sys/class/net").join(name));
        fs::remove_dir_all(self.dev_dir(addr).join("net").join(name))
    }

    /// Give PCI function `addr` the RDMA device `name` with `uverbsN`, `umadN`, `issmN`
    /// (N taken from the name's number) and their `/dev/infiniband` nodes.
    pub fn add_rdma(&self, addr: &str, name: &str) -> io::Result<()> {
        let n: u32 = name
            .rsplit('_')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let dir = self.dev_dir(addr);
        let ib = dir.join("infiniband").join(name);
        fs::create_dir_all(ib.join("ports/1"))?;
        link(&format!("../../../{addr}"), &ib.join("device"))?;
        write(&ib.join("node_type"), "1: CA")?;
        write(&ib.join("ports/1/state"), "4: ACTIVE")?;
        let root_rel = format!("../../devices/{}/{addr}", self.pci_root(addr));
        link(
            &format!("{root_rel}/infiniband/{name}"),
            &self.root.join("sys/class/infiniband").join(name),
        )?;
        for (class, dev) in [
            ("infiniband_verbs", format!("uverbs{n}")),
            ("infiniband_mad", format!("umad{n}")),
            ("infiniband_mad", format!("issm{n}")),
        ] {
            let d = dir.join(class).join(&dev);
            write(&d.join("ibdev"), name)?;
            link(
                &format!("{root_rel}/{class}/{dev}"),
                &self.root.join("sys/class").join(class).join(&dev),
            )?;
            write(&self.root.join("dev/infiniband").join(&dev), "")?;
        }
        Ok(())
    }

    /// Set `sriov_numvfs` of PF `i` to `n`, creating or removing VF functions as the
    /// kernel does (VFs beyond `n` disappear with their netdevs and RDMA devices).
    pub fn set_num_vfs(&mut self, pf: usize, n: u32) -> io::Result<()> {
        self.set_num_vfs_idx(pf, n)
    }

    fn set_num_vfs_idx(&mut self, i: usize, n: u32) -> io::Result<()> {
        let pf = self.pfs[i].clone();
        let pf_addr = pci_addr(&pf.bus, pf.devfn);
        let pf_dir = self.dev_dir(&pf_addr);
        let old: u32 = fs::read_to_string(pf_dir.join("sriov_numvfs"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        for v in n..old {
            let addr = self.vf_address(i, v);
            let dir = self.dev_dir(&addr);
            self.remove_class_links(&dir)?;
            let _ = fs::remove_file(pf_dir.join(format!("virtfn{v}")));
            let _ = fs::remove_file(self.root.join("sys/bus/pci/devices").join(&addr));
            for d in ["mlx5_core", "vfio-pci"] {
                let _ = fs::remove_file(self.root.join("sys/bus/pci/drivers").join(d).join(&addr));
            }
            fs::remove_dir_all(&dir)?;
        }
        for v in old..n {
            let addr = self.vf_address(i, v);
            let binding = pf.vfs.get(v as usize).cloned().unwrap_or(VfBinding::Mlx5);
            let (driver, group) = match binding {
                VfBinding::Mlx5 => (Some("mlx5_core"), None),
                VfBinding::Vfio => {
                    self.next_iommu += 1;
                    (Some("vfio-pci"), Some(self.next_iommu))
                }
                VfBinding::Unbound => (None, None),
            };
            self.write_function(&addr, &pf.vf_device, pf.numa_node, driver, group)?;
            let dir = self.dev_dir(&addr);
            link(&format!("../{pf_addr}"), &dir.join("physfn"))?;
            link(&format!("../{addr}"), &pf_dir.join(format!("virtfn{v}")))?;
            if binding == VfBinding::Mlx5 {
                let seed = (self.bus_num(&pf.bus) << 8) | (pf.first_vf_devfn + v);
                self.add_netdev(
                    &addr,
                    &self.vf_netdev(i, v),
                    pf.link_type,
                    true,
                    &mac_for(seed),
                )?;
                let rdma = self.alloc_rdma();
                self.add_rdma(&addr, &rdma)?;
            }
        }
        write(&pf_dir.join("sriov_numvfs"), &n.to_string())
    }

    /// Remove the class links and `/dev` nodes that point into a device directory.
    fn remove_class_links(&self, dir: &Path) -> io::Result<()> {
        for entry in fs::read_dir(dir.join("net"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = fs::remove_file(self.root.join("sys/class/net").join(entry.file_name()));
        }
        for class in ["infiniband", "infiniband_verbs", "infiniband_mad"] {
            for entry in fs::read_dir(dir.join(class))
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = fs::remove_file(
                    self.root
                        .join("sys/class")
                        .join(class)
                        .join(entry.file_name()),
                );
                if class != "infiniband" {
                    let _ =
                        fs::remove_file(self.root.join("dev/infiniband").join(entry.file_name()));
                }
            }
        }
        Ok(())
    }

    /// Write `operstate` of netdev `name` (e.g. `up`, `down`).
    pub fn set_operstate(&self, name: &str, state: &str) -> io::Result<()> {
        write(
            &self.root.join("sys/class/net").join(name).join("operstate"),
            state,
        )
    }

    /// Unbind PCI function `addr` from its driver (drops its netdevs and RDMA devices).
    pub fn unbind(&self, addr: &str) -> io::Result<()> {
        let dir = self.dev_dir(addr);
        self.remove_class_links(&dir)?;
        for sub in ["net", "infiniband", "infiniband_verbs", "infiniband_mad"] {
            let _ = fs::remove_dir_all(dir.join(sub));
        }
        for d in ["mlx5_core", "vfio-pci"] {
            let _ = fs::remove_file(self.root.join("sys/bus/pci/drivers").join(d).join(addr));
        }
        let _ = fs::remove_file(dir.join("driver"));
        self.write_uevent(addr, None)
    }

    /// Bind PCI function `addr` to `driver` (only the link; add netdevs separately).
    pub fn bind(&self, addr: &str, driver: &str) -> io::Result<()> {
        let dir = self.dev_dir(addr);
        link(
            &format!("../../../bus/pci/drivers/{driver}"),
            &dir.join("driver"),
        )?;
        link(
            &format!("../../../../devices/{}/{addr}", self.pci_root(addr)),
            &self
                .root
                .join("sys/bus/pci/drivers")
                .join(driver)
                .join(addr),
        )?;
        self.write_uevent(addr, Some(driver))
    }

    /// Set the host RDMA netns mode file (`Y` shared, `N` exclusive).
    pub fn set_netns_mode(&self, shared: bool) -> io::Result<()> {
        write(
            &self.root.join("sys/module/ib_core/parameters/netns_mode"),
            if shared { "Y" } else { "N" },
        )
    }
}
