//! What the kernel says about a process: CPU time used and resident memory, from `/proc`.
//! Linux only; elsewhere every figure is `None` and the benches print "unknown".

use std::time::Duration;

/// Clock ticks per second of `/proc/PID/stat`'s times (`sysconf(_SC_CLK_TCK)`, 100 on every
/// Linux this runs on).
const TICKS_PER_SECOND: u64 = 100;

/// User plus system CPU time used by process `pid` (`None`: this process) so far.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let stat = std::fs::read_to_string(proc_path(pid, "stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// Process `pid`'s (`None`: this process's) resident set now and at its peak, in KiB
/// (`VmRSS`, `VmHWM`).
pub fn rss_kib(pid: Option<u32>) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(proc_path(pid, "status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// `kib` as MiB with one decimal, or "unknown".
pub fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "unknown".to_owned(),
        |kib| format!("{:.1} MiB", kib as f64 / 1024.0),
    )
}

fn proc_path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_cpu_and_memory() {
        // Burn a little CPU so that at least one tick is counted.
        let mut x = 0_u64;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        if cfg!(target_os = "linux") {
            assert!(cpu_time(None).is_some_and(|t| t > Duration::ZERO));
            let (now, peak) = rss_kib(None).expect("VmRSS and VmHWM");
            assert!(now > 0 && peak >= now);
        }
    }
}
