//! CPU time read from `/proc`: this process's, and that of every process of a program (all of
//! Postgres' backends, say), so a bench can say where the time went. Zero where there is no
//! `/proc`.

/// CPU seconds of this process and of Postgres (all its processes): a reading, or what was
/// spent between two.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    pub process: f64,
    pub postgres: f64,
}

impl CpuTime {
    /// The totals now; subtract an earlier reading for what was spent in between.
    pub fn now() -> Self {
        Self {
            process: process_cpu_seconds(),
            postgres: program_cpu_seconds("postgres"),
        }
    }

    /// What was spent since `earlier` (a reading of [`CpuTime::now`]).
    pub fn since(earlier: CpuTime) -> Self {
        let now = Self::now();
        Self {
            process: now.process - earlier.process,
            postgres: now.postgres - earlier.postgres,
        }
    }

    pub fn plus(self, other: CpuTime) -> Self {
        Self {
            process: self.process + other.process,
            postgres: self.postgres + other.postgres,
        }
    }

    /// Microseconds per unit, for `units` operations that this time paid for (rounded for the
    /// JSON summary).
    pub fn per_unit_us(self, units: u64) -> Self {
        let per = |seconds: f64| super::round(seconds * 1e6 / units.max(1) as f64);
        Self {
            process: per(self.process),
            postgres: per(self.postgres),
        }
    }
}

/// User plus system CPU time of this process, from `/proc/self/stat` (0 where there is none).
pub fn process_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat").map_or(0.0, |stat| stat_cpu_seconds(&stat))
}

/// User plus system CPU time of every running process named `program` (as `/proc/<pid>/comm`
/// says: `postgres` covers the postmaster and every backend).
pub fn program_cpu_seconds(program: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|comm| comm.trim() == program)
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .map(|stat| stat_cpu_seconds(&stat))
        .sum()
}

/// utime + stime of one `/proc/<pid>/stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> f64 {
    // Fields after the command name (which may hold spaces) in parentheses; utime and stime
    // are the 14th and 15th fields, in clock ticks (100 a second on Linux).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_adds_up_and_divides_into_microseconds_per_unit() {
        let spent = CpuTime {
            process: 0.5,
            postgres: 0.25,
        }
        .plus(CpuTime {
            process: 0.5,
            postgres: 0.0,
        });
        let per_unit = spent.per_unit_us(1_000);
        assert_eq!((per_unit.process, per_unit.postgres), (1_000.0, 250.0));
        assert_eq!(spent.per_unit_us(0).process, 1e6, "no units counts as one");
    }

    #[test]
    fn this_process_uses_cpu_and_reads_as_its_program() {
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1 && process_cpu_seconds() > 0.0);
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(program_cpu_seconds(comm.trim()) >= process_cpu_seconds() * 0.5);
        assert_eq!(program_cpu_seconds("no-such-program-here"), 0.0);
    }
}
