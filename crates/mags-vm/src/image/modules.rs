//! Which kernel modules the initramfs carries and in what order the agent
//! loads them.
//!
//! Debian's kernel package ships no `modules.dep` (its postinst runs
//! `depmod`), so dependencies come from each module's own `.modinfo` ELF
//! section (`depends=` and the `pre:` part of `softdep=`), read here without
//! any host tool.

use super::ImageError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Whether a build fails when a wanted module is not in the kernel package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Required,
    /// Included when the kernel has it as a module.
    IfPresent,
}

/// The modules the initramfs carries, before dependencies; their dependency
/// closure is added. Changing this list changes the image hash.
pub(crate) const INITRAMFS_MODULES: &[(&str, Need)] = &[
    ("virtio_mmio", Need::Required),
    ("virtio_blk", Need::Required),
    ("virtio_console", Need::Required),
    ("virtio_rng", Need::IfPresent),
    ("virtio_net", Need::Required),
    ("squashfs", Need::Required),
    ("overlay", Need::Required),
];

/// The `.ko` files of one kernel release, by module name.
pub(crate) struct ModuleIndex {
    release: String,
    by_name: BTreeMap<String, PathBuf>,
}

impl ModuleIndex {
    /// Indexes every `.ko` under `dir` (a `lib/modules/<release>` tree).
    pub(crate) fn scan(dir: &Path, release: &str) -> Result<Self, ImageError> {
        let mut by_name = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).map_err(|e| ImageError::io(&d, e))? {
                let entry = entry.map_err(|e| ImageError::io(&d, e))?;
                let path = entry.path();
                let ft = entry.file_type().map_err(|e| ImageError::io(&path, e))?;
                if ft.is_dir() {
                    stack.push(path);
                } else if let Some(stem) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".ko"))
                {
                    by_name.insert(module_name(stem), path);
                }
            }
        }
        Ok(Self {
            release: release.to_string(),
            by_name,
        })
    }

    /// The wanted modules and their dependencies, dependencies first, as
    /// (module name, path of its `.ko`).
    pub(crate) fn load_order(
        &self,
        wanted: &[(&str, Need)],
    ) -> Result<Vec<(String, PathBuf)>, ImageError> {
        let names = load_order(wanted, &self.release, |name| {
            let Some(path) = self.by_name.get(name) else {
                return Ok(None);
            };
            let bytes = std::fs::read(path).map_err(|e| ImageError::io(path, e))?;
            let deps = module_deps(&bytes).map_err(|detail| ImageError::ModuleInfo {
                path: path.clone(),
                detail,
            })?;
            // A soft dependency may be built in: only follow the ones we have.
            Ok(Some(
                deps.into_iter()
                    .filter(|d| d.hard || self.by_name.contains_key(&d.name))
                    .map(|d| d.name)
                    .collect(),
            ))
        })?;
        Ok(names
            .into_iter()
            .filter_map(|n| self.by_name.get(&n).map(|p| (n.clone(), p.clone())))
            .collect())
    }
}

/// The kernel's name for a module file stem: dashes become underscores.
pub(crate) fn module_name(stem: &str) -> String {
    stem.replace('-', "_")
}

/// Orders `wanted` and everything it depends on so that each module comes
/// after its dependencies. `deps(name)` gives a module's dependencies, or
/// `None` when the kernel has no such module. Deterministic: wanted modules
/// in the given order, each one's dependencies sorted by name.
pub(crate) fn load_order(
    wanted: &[(&str, Need)],
    release: &str,
    mut deps: impl FnMut(&str) -> Result<Option<Vec<String>>, ImageError>,
) -> Result<Vec<String>, ImageError> {
    enum Mark {
        InProgress,
        Done,
    }
    struct Walk<'a, F> {
        deps: &'a mut F,
        marks: BTreeMap<String, Mark>,
        order: Vec<String>,
    }
    impl<F> Walk<'_, F>
    where
        F: FnMut(&str) -> Result<Option<Vec<String>>, ImageError>,
    {
        /// Post-order DFS; `Ok(false)` when `name` does not exist.
        fn visit(&mut self, name: &str, release: &str) -> Result<bool, ImageError> {
            match self.marks.get(name) {
                Some(Mark::Done) => return Ok(true),
                Some(Mark::InProgress) => return Err(ImageError::ModuleCycle(name.to_string())),
                None => {}
            }
            let Some(children) = (self.deps)(name)? else {
                return Ok(false);
            };
            self.marks.insert(name.to_string(), Mark::InProgress);
            let children: BTreeSet<String> = children.into_iter().collect();
            for child in &children {
                if !self.visit(child, release)? {
                    return Err(ImageError::ModuleMissing {
                        name: format!("{child} (needed by {name})"),
                        release: release.to_string(),
                    });
                }
            }
            self.marks.insert(name.to_string(), Mark::Done);
            self.order.push(name.to_string());
            Ok(true)
        }
    }

    let mut walk = Walk {
        deps: &mut deps,
        marks: BTreeMap::new(),
        order: Vec::new(),
    };
    for &(name, need) in wanted {
        if !walk.visit(name, release)? && need == Need::Required {
            return Err(ImageError::ModuleMissing {
                name: name.to_string(),
                release: release.to_string(),
            });
        }
    }
    Ok(walk.order)
}

/// One dependency of a module.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Dep {
    pub name: String,
    /// `depends=` (must load first) rather than `softdep=pre:` (should).
    pub hard: bool,
}

/// The dependencies a `.ko` declares in its `.modinfo` section.
pub(crate) fn module_deps(ko: &[u8]) -> Result<Vec<Dep>, String> {
    let info = elf_section(ko, ".modinfo")?;
    let mut deps = Vec::new();
    for entry in info.split(|&b| b == 0) {
        let entry = String::from_utf8_lossy(entry);
        if let Some(list) = entry.strip_prefix("depends=") {
            deps.extend(list.split(',').filter(|s| !s.is_empty()).map(|s| Dep {
                name: module_name(s),
                hard: true,
            }));
        } else if let Some(spec) = entry.strip_prefix("softdep=") {
            // "pre: a b post: c"
            let mut pre = false;
            for word in spec.split_whitespace() {
                match word {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    m if pre => deps.push(Dep {
                        name: module_name(m),
                        hard: false,
                    }),
                    _ => {}
                }
            }
        }
    }
    Ok(deps)
}

/// The bytes of the named section of a little-endian ELF64 file.
pub(crate) fn elf_section<'a>(elf: &'a [u8], want: &str) -> Result<&'a [u8], String> {
    let u16_at = |o: usize| -> Result<u64, String> {
        elf.get(o..o + 2)
            .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])))
            .ok_or_else(|| "truncated ELF".to_string())
    };
    let u32_at = |o: usize| -> Result<u64, String> {
        elf.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(|b| u64::from(u32::from_le_bytes(b)))
            .ok_or_else(|| "truncated ELF".to_string())
    };
    let u64_at = |o: usize| -> Result<u64, String> {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| "truncated ELF".to_string())
    };
    let usize_of = |v: u64| usize::try_from(v).map_err(|_| "ELF offset overflow".to_string());
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not a little-endian ELF64 file".to_string());
    }
    let shoff = usize_of(u64_at(0x28)?)?;
    let shentsize = usize_of(u16_at(0x3a)?)?;
    let shnum = usize_of(u16_at(0x3c)?)?;
    let shstrndx = usize_of(u16_at(0x3e)?)?;
    let section = |i: usize| -> Result<(u64, &'a [u8]), String> {
        let h = shoff + i * shentsize;
        let name = u32_at(h)?;
        let off = usize_of(u64_at(h + 24)?)?;
        let size = usize_of(u64_at(h + 32)?)?;
        let data = elf
            .get(off..off.saturating_add(size))
            .ok_or_else(|| format!("section {i} lies outside the file"))?;
        Ok((name, data))
    };
    let (_, names) = section(shstrndx)?;
    for i in 0..shnum {
        let (name_off, data) = section(i)?;
        let name = names
            .get(usize_of(name_off)?..)
            .and_then(|n| n.split(|&b| b == 0).next())
            .unwrap_or_default();
        if name == want.as_bytes() {
            return Ok(data);
        }
    }
    Err(format!("no {want} section"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 with a `.shstrtab` and a `.modinfo` holding `info`.
    pub(crate) fn fake_ko(info: &[&str]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0".to_vec();
        let mut modinfo = Vec::new();
        for i in info {
            modinfo.extend_from_slice(i.as_bytes());
            modinfo.push(0);
        }
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let strtab_off = elf.len();
        elf.extend_from_slice(&shstrtab);
        let modinfo_off = elf.len();
        elf.extend_from_slice(&modinfo);
        let shoff = elf.len();
        // Null section, .shstrtab (index 1), .modinfo (index 2).
        for (name, off, size) in [
            (0u32, 0usize, 0usize),
            (1, strtab_off, shstrtab.len()),
            (11, modinfo_off, modinfo.len()),
        ] {
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        }
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_depends_and_softdeps_from_modinfo() {
        let ko = fake_ko(&[
            "license=GPL",
            "softdep=pre: crc32c-generic post: zzz",
            "depends=virtio_ring,virtio",
            "name=virtio_blk",
        ]);
        let deps = module_deps(&ko).unwrap();
        let dep = |name: &str, hard| Dep {
            name: name.to_string(),
            hard,
        };
        assert_eq!(
            deps,
            [
                dep("crc32c_generic", false),
                dep("virtio_ring", true),
                dep("virtio", true)
            ]
        );
        assert_eq!(module_deps(&fake_ko(&["depends="])).unwrap(), []);
        assert!(module_deps(b"not an elf").is_err());
        assert!(module_deps(&ko[..100]).is_err());
    }

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(m, d)| (m.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn order(
        g: &BTreeMap<String, Vec<String>>,
        wanted: &[(&str, Need)],
    ) -> Result<Vec<String>, ImageError> {
        load_order(wanted, "test", |m| Ok(g.get(m).cloned()))
    }

    #[test]
    fn closure_puts_dependencies_first() {
        let g = graph(&[
            ("virtio", &[]),
            ("virtio_ring", &["virtio"]),
            ("virtio_mmio", &["virtio_ring", "virtio"]),
            ("virtio_blk", &["virtio", "virtio_ring"]),
            ("failover", &[]),
            ("net_failover", &["failover"]),
            ("virtio_net", &["virtio_ring", "virtio", "net_failover"]),
            ("squashfs", &[]),
            ("unrelated", &[]),
        ]);
        let got = order(
            &g,
            &[
                ("virtio_mmio", Need::Required),
                ("virtio_blk", Need::Required),
                ("virtio_rng", Need::IfPresent),
                ("virtio_net", Need::Required),
                ("squashfs", Need::Required),
            ],
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "virtio",
                "virtio_ring",
                "virtio_mmio",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net",
                "squashfs"
            ]
        );
        // Every module after all of its dependencies, each exactly once.
        for (i, m) in got.iter().enumerate() {
            for d in &g[m] {
                assert!(got[..i].contains(d), "{d} must come before {m}");
            }
        }
    }

    #[test]
    fn missing_and_cyclic_modules_are_errors() {
        let g = graph(&[("a", &["b"]), ("b", &["a"]), ("c", &["nope"])]);
        assert!(matches!(
            order(&g, &[("a", Need::Required)]),
            Err(ImageError::ModuleCycle(_))
        ));
        let err = order(&g, &[("c", Need::IfPresent)]).unwrap_err();
        assert!(err.to_string().contains("nope (needed by c)"), "{err}");
        let err = order(&g, &[("zzz", Need::Required)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel module zzz not found in kernel test"
        );
        assert!(order(&g, &[("zzz", Need::IfPresent)]).unwrap().is_empty());
    }

    #[test]
    fn index_maps_dashed_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("kernel/drivers");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("virtio-rng.ko"), fake_ko(&["depends=virtio"])).unwrap();
        std::fs::write(sub.join("virtio.ko"), fake_ko(&["depends="])).unwrap();
        std::fs::write(sub.join("modules.txt"), "x").unwrap();
        let index = ModuleIndex::scan(dir.path(), "test").unwrap();
        let got = index.load_order(&[("virtio_rng", Need::Required)]).unwrap();
        let names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["virtio", "virtio_rng"]);
        assert!(got[1].1.ends_with("virtio-rng.ko"));
    }
}
