//! Kernel addresses: a compact table of `/proc/kallsyms`, read once.
/// Kernel text symbols from `/proc/kallsyms`, sorted by address, names in one buffer (about 5 MiB
/// for 120,000 symbols, read once).
pub(super) struct Kallsyms {
    /// (address, offset of the name in `names`, its length).
    pub(super) symbols: Vec<(u64, u32, u16)>,
    names: String,
}

impl Kallsyms {
    pub(super) fn read(path: &str) -> Option<Kallsyms> {
        let text = std::fs::read_to_string(path).ok()?;
        Self::parse(&text)
    }

    /// `None` when there are no text symbols or every address reads 0 (`kptr_restrict`).
    pub(super) fn parse(text: &str) -> Option<Kallsyms> {
        let mut symbols = Vec::new();
        let mut names = String::new();
        for line in text.lines() {
            let mut fields = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            let (Ok(offset), Ok(len)) = (u32::try_from(names.len()), u16::try_from(name.len()))
            else {
                continue;
            };
            names.push_str(name);
            symbols.push((addr, offset, len));
        }
        if symbols.iter().all(|(addr, _, _)| *addr == 0) {
            return None;
        }
        symbols.sort_unstable_by_key(|(addr, _, _)| *addr);
        symbols.shrink_to_fit();
        names.shrink_to_fit();
        Some(Kallsyms { symbols, names })
    }

    /// The symbol at or before `addr`.
    pub(super) fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.symbols.partition_point(|(a, _, _)| *a <= addr);
        let (_, offset, len) = *self.symbols.get(i.checked_sub(1)?)?;
        self.names
            .get(offset as usize..offset as usize + usize::from(len))
    }
}
