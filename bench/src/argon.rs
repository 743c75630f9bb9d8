//! The physical limit of logins: raw Argon2id hashes per second with
//! Sesame's parameters, one thread per core, measured four ways: Sesame's
//! own kernel (`sesame::core::passwords::Kernel`: argon2-rust, dispatched at
//! run time, memory reused: what a login runs), the RustCrypto crate reusing
//! each thread's block buffer (what Sesame ran before) and allocating per
//! hash, and the C reference implementation (through `argon2-sys`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Argon2id parameters under test.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub memory_kib: u32,
    pub iterations: u32,
}

/// Which implementation to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    SesameKernel,
    RustReusingMemory,
    RustAllocating,
    CReference,
}

fn hasher(cost: Cost) -> Argon2<'static> {
    let params =
        Params::new(cost.memory_kib, cost.iterations, 1, Some(32)).expect("valid parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes per second over `duration` on `threads` threads.
pub fn rate(implementation: Implementation, cost: Cost, threads: usize, duration: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
            std::thread::spawn(move || {
                let argon = hasher(cost);
                let mut blocks = vec![Block::default(); argon.params().block_count()];
                let mut kernel = sesame::core::passwords::Kernel::default();
                let mut out = [0u8; 32];
                let salt = *b"bench-salt-16byt";
                while !stop.load(Ordering::Relaxed) {
                    match implementation {
                        Implementation::SesameKernel => kernel
                            .compute(
                                Algorithm::Argon2id,
                                Version::V0x13,
                                argon.params(),
                                b"correct horse battery",
                                &salt,
                                &mut out,
                            )
                            .expect("hash"),
                        Implementation::RustReusingMemory => argon
                            .hash_password_into_with_memory(
                                b"correct horse battery",
                                &salt,
                                &mut out,
                                &mut blocks,
                            )
                            .expect("hash"),
                        Implementation::RustAllocating => argon
                            .hash_password_into(b"correct horse battery", &salt, &mut out)
                            .expect("hash"),
                        Implementation::CReference => {
                            let password = b"correct horse battery";
                            // SAFETY: every pointer is valid for the length passed with it.
                            let code = unsafe {
                                argon2_sys::argon2id_hash_raw(
                                    cost.iterations,
                                    cost.memory_kib,
                                    1,
                                    password.as_ptr().cast(),
                                    password.len(),
                                    salt.as_ptr().cast(),
                                    salt.len(),
                                    out.as_mut_ptr().cast(),
                                    out.len(),
                                )
                            };
                            assert_eq!(code, 0, "argon2id_hash_raw failed");
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
