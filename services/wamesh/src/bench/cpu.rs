//! CPU time read from `/proc`: this process's, and that of every process of a program (all of
//! Postgres' backends, say), so a bench can say where the time went. Zero where there is no
//! `/proc`.

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
