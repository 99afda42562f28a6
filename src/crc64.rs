//! CRC-64/NVME at 256 bits per carry-less multiply (AVX2 + VPCLMULQDQ), for CPUs without AVX-512.
//!
//! With AVX-512 the work goes to crc-fast's own 512-bit path, which is faster there.
//!
//! crc-fast folds 128 bits per multiply unless the CPU has AVX-512, and its pass was a quarter of
//! the uploader's CPU on the bench machine (AMD EPYC, AVX2 + VPCLMULQDQ, no AVX-512: see
//! bench/analysis.md). This module folds the bulk of a buffer eight 16-byte lanes at a time in four
//! 256-bit registers and leaves the last bytes and the 128-to-64-bit reduction to crc-fast, so the
//! result is crc-fast's by construction; the tests compare the two on every length and alignment.
//!
//! Notation: a 64-bit reflected value `v` stands for the polynomial `sum(bit_j(v) x^(63-j))`, a
//! 16-byte lane for `lo(x) x^64 + hi(x)` (`lo` = its first eight bytes, little-endian). A
//! carry-less product of two reflected values is their polynomial product times `x` in lane
//! notation, so a lane moves `8 * d` bits forward (`d` bytes) with the constants
//! `x^(8d + 63)` (for `lo`) and `x^(8d - 1)` (for `hi`), reduced modulo P and reflected.

/// CRC-64/NVME's polynomial without its `x^64` term, most significant bit first.
const POLY: u64 = 0xad93_d235_94c9_3659;

/// `x^e mod P`, reflected.
const fn xpow(e: u32) -> u64 {
    let mut r: u64 = 1;
    let mut i = 0;
    while i < e {
        let carry = r >> 63;
        r <<= 1;
        if carry == 1 {
            r ^= POLY;
        }
        i += 1;
    }
    r.reverse_bits()
}

/// The pair of constants that moves a lane `bytes` forward: (for `lo`, for `hi`).
const fn fold_keys(bytes: u32) -> (u64, u64) {
    (xpow(8 * bytes + 63), xpow(8 * bytes - 1))
}

/// Bytes taken per loop turn: four 256-bit registers of two lanes each.
const BLOCK: usize = 128;

/// Inputs shorter than this go to crc-fast whole (the set-up is not worth it).
const MIN_LEN: usize = 2 * BLOCK;

/// Advances the raw (not yet inverted) CRC-64/NVME register over `data`.
pub fn update(state: u64, data: &[u8]) -> u64 {
    update_with(wide_wanted(), state, data)
}

/// `update` with the 256-bit path on (where the CPU has it) or off.
fn update_with(wide: bool, state: u64, data: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if wide && data.len() >= MIN_LEN && wide_available() {
        let bulk = data.len() / BLOCK * BLOCK;
        // SAFETY: the CPU has the features `fold` is compiled for (checked just above).
        let lane = unsafe { x86::fold(state, &data[..bulk]) };
        // The folded lane is the last 16 bytes of an equivalent message read from a zero register.
        return crc_fast_update(crc_fast_update(0, &lane), &data[bulk..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = wide;
    crc_fast_update(state, data)
}

fn crc_fast_update(state: u64, data: &[u8]) -> u64 {
    let mut digest =
        crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc64Nvme, state);
    digest.update(data);
    digest.get_state()
}

/// Whether `update` takes the 256-bit path: only where crc-fast has no 512-bit one of its own
/// (crc-fast's is faster: 95 against 65 GB/s on a cached buffer, AVX-512 Xeon, 2026-11-29).
fn wide_wanted() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *WANTED.get_or_init(|| {
            !(std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl"))
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the CPU can run the 256-bit path (checked once).
fn wide_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *WIDE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("vpclmulqdq")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, fold_keys};
    use std::arch::x86_64::*;

    /// Folds `data` (a non-empty multiple of `BLOCK` bytes, at least two blocks) into one lane
    /// whose CRC from a zero register equals the CRC of `data` from `state`.
    #[target_feature(enable = "avx2,vpclmulqdq,pclmulqdq")]
    pub(super) unsafe fn fold(state: u64, data: &[u8]) -> [u8; 16] {
        debug_assert!(data.len() >= 2 * BLOCK && data.len().is_multiple_of(BLOCK));
        let ptr = data.as_ptr();
        // SAFETY (all loads): every offset read is below `data.len()`, loads are unaligned.
        let load = |at: usize| unsafe { _mm256_loadu_si256(ptr.add(at).cast()) };
        let (k_lo, k_hi) = const { fold_keys(BLOCK as u32) };
        let keys = _mm256_set_epi64x(k_hi as i64, k_lo as i64, k_hi as i64, k_lo as i64);
        // The register enters as the first eight bytes XOR the state.
        let mut x0 = _mm256_xor_si256(load(0), _mm256_set_epi64x(0, 0, 0, state as i64));
        let mut x1 = load(32);
        let mut x2 = load(64);
        let mut x3 = load(96);
        let fold = |x: __m256i, next: __m256i| {
            let lo = _mm256_clmulepi64_epi128::<0x00>(x, keys);
            let hi = _mm256_clmulepi64_epi128::<0x11>(x, keys);
            _mm256_xor_si256(_mm256_xor_si256(lo, hi), next)
        };
        let mut at = BLOCK;
        while at < data.len() {
            x0 = fold(x0, load(at));
            x1 = fold(x1, load(at + 32));
            x2 = fold(x2, load(at + 64));
            x3 = fold(x3, load(at + 96));
            at += BLOCK;
        }
        // Eight lanes left, 16 bytes apart: move each onto the last one.
        let lanes = [
            _mm256_castsi256_si128(x0),
            _mm256_extracti128_si256::<1>(x0),
            _mm256_castsi256_si128(x1),
            _mm256_extracti128_si256::<1>(x1),
            _mm256_castsi256_si128(x2),
            _mm256_extracti128_si256::<1>(x2),
            _mm256_castsi256_si128(x3),
            _mm256_extracti128_si256::<1>(x3),
        ];
        const KEYS: [(u64, u64); 7] = {
            let mut k = [(0, 0); 7];
            let mut i = 0;
            while i < 7 {
                k[i] = fold_keys(16 * (7 - i as u32));
                i += 1;
            }
            k
        };
        let mut acc = lanes[7];
        for (lane, (k_lo, k_hi)) in lanes[..7].iter().zip(KEYS) {
            let k = _mm_set_epi64x(k_hi as i64, k_lo as i64);
            let lo = _mm_clmulepi64_si128::<0x00>(*lane, k);
            let hi = _mm_clmulepi64_si128::<0x11>(*lane, k);
            acc = _mm_xor_si128(acc, _mm_xor_si128(lo, hi));
        }
        let mut out = [0u8; 16];
        // SAFETY: `out` holds 16 bytes; the store is unaligned.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), acc) };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(state: u64, data: &[u8]) -> u64 {
        crc_fast_update(state, data)
    }

    /// The 256-bit path whatever `update` would choose on this CPU (it falls back to crc-fast
    /// only where the CPU lacks the instructions), so an AVX-512 machine still tests it.
    fn wide(state: u64, data: &[u8]) -> u64 {
        update_with(true, state, data)
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn xpow_matches_the_polynomial() {
        // x^0 is 1: reflected, the top bit; x^64 mod P is P's low terms.
        assert_eq!(xpow(0), 1 << 63);
        assert_eq!(xpow(63), 1);
        assert_eq!(xpow(64), POLY.reverse_bits());
    }

    #[test]
    fn agrees_with_crc_fast_for_every_length_and_alignment() {
        let data = pseudo_random(4096 + 64, 7);
        for offset in [0, 1, 3, 8, 15, 31] {
            for len in (0..=1200).chain([2048, 4095, 4096]) {
                let slice = &data[offset..offset + len];
                for state in [u64::MAX, 0, 0x0123_4567_89ab_cdef] {
                    let want = reference(state, slice);
                    let at = format!("offset {offset} len {len} state {state:#x}");
                    assert_eq!(wide(state, slice), want, "{at}");
                    assert_eq!(update(state, slice), want, "{at}");
                }
            }
        }
    }

    #[test]
    fn agrees_with_crc_fast_on_large_and_patterned_input() {
        let random = pseudo_random(3 << 20, 11);
        assert_eq!(wide(!0, &random), reference(!0, &random));
        assert_eq!(update(!0, &random), reference(!0, &random));
        for byte in [0u8, 0xff, b'\n'] {
            let same = vec![byte; (1 << 20) + 77];
            assert_eq!(wide(!0, &same), reference(!0, &same), "byte {byte}");
        }
        // Streaming in uneven pieces gives the one-shot result.
        let (mut state, mut state_wide) = (!0, !0);
        for piece in random.chunks(100_003) {
            state = update(state, piece);
            state_wide = wide(state_wide, piece);
        }
        assert_eq!(state, reference(!0, &random));
        assert_eq!(state_wide, reference(!0, &random));
    }

    #[test]
    fn known_check_value() {
        // CRC-64/NVME's catalogue check value for "123456789", repeated past the bulk threshold.
        assert_eq!(!update(!0, b"123456789"), 0xae8b_1486_0a79_9888);
        let long = b"123456789".repeat(100);
        let want = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, &long);
        assert_eq!(!update(!0, &long), want);
        assert_eq!(!wide(!0, &long), want);
    }
}
