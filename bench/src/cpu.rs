//! CPU time from the kernel's per-thread accounting
//! (`/proc/PID/task/TID/schedstat`, nanoseconds spent on a CPU): what a row
//! cost Sesame outside its hashing threads, its hashing threads, the local
//! PostgreSQL and Redis processes, and the load generator. Rates move with
//! whatever else the shared machine runs; CPU time per request moves much
//! less, so it tells where a ratio is lost.

use std::fs;

/// CPU time spent during a run, nanoseconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuUse {
    /// The server's threads (Sesame's, or the bare reference's) other than
    /// a hashing pool.
    pub server_ns: u64,
    /// Sesame's hashing threads (`sesame-hash-N`).
    pub hashing_ns: u64,
    /// Every `postgres` and `redis-server` process on the machine.
    pub services_ns: u64,
    /// This process: the load generator.
    pub client_ns: u64,
}

impl CpuUse {
    pub fn add(&mut self, other: CpuUse) {
        self.server_ns += other.server_ns;
        self.hashing_ns += other.hashing_ns;
        self.services_ns += other.services_ns;
        self.client_ns += other.client_ns;
    }

    /// The table's wording: microseconds per answered request.
    pub fn per_request(&self, requests: u64) -> Option<String> {
        if requests == 0 {
            return None;
        }
        let us = |ns: u64| ns as f64 / requests as f64 / 1000.0;
        let mut parts = vec![format!("server {:.0}", us(self.server_ns))];
        if self.hashing_ns > 0 {
            parts[0].push_str(&format!(" + hashing {:.0}", us(self.hashing_ns)));
        }
        if self.services_ns > 0 {
            parts.push(format!("PostgreSQL/Redis {:.0}", us(self.services_ns)));
        }
        parts.push(format!("load generator {:.0}", us(self.client_ns)));
        Some(format!("CPU µs/request: {}", parts.join(", ")))
    }
}

/// Which processes a run's CPU time is read from.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// The Sesame (or bare axum) server.
    pub pid: u32,
    /// Whether the run uses the local PostgreSQL (and Redis).
    pub services: bool,
}

/// The counters at the start of a run.
pub struct Snapshot(CpuUse);

impl Probe {
    pub fn snapshot(&self) -> Snapshot {
        let (server_ns, hashing_ns) = threads(self.pid);
        let (client_rest, client_hashing) = threads(std::process::id());
        Snapshot(CpuUse {
            server_ns,
            hashing_ns,
            services_ns: if self.services { services() } else { 0 },
            client_ns: client_rest + client_hashing,
        })
    }

    pub fn since(&self, before: &Snapshot) -> CpuUse {
        let now = self.snapshot().0;
        let then = &before.0;
        CpuUse {
            server_ns: now.server_ns.saturating_sub(then.server_ns),
            hashing_ns: now.hashing_ns.saturating_sub(then.hashing_ns),
            services_ns: now.services_ns.saturating_sub(then.services_ns),
            client_ns: now.client_ns.saturating_sub(then.client_ns),
        }
    }
}

/// The first field of a `schedstat` file: time on a CPU, nanoseconds.
fn on_cpu_ns(path: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// A process's CPU time: its hashing threads apart from the rest.
fn threads(pid: u32) -> (u64, u64) {
    let (mut rest, mut hashing) = (0, 0);
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let ns = on_cpu_ns(&format!("{}/schedstat", dir.display()));
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with("sesame-hash") {
            hashing += ns;
        } else {
            rest += ns;
        }
    }
    (rest, hashing)
}

/// CPU time of every PostgreSQL and Redis process on the machine (the
/// local servers the PostgreSQL rows use; nothing else runs them here).
fn services() -> u64 {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            matches!(comm.trim_end(), "postgres" | "redis-server")
        })
        .map(|pid| {
            let (rest, hashing) = threads(pid);
            rest + hashing
        })
        .sum()
}
