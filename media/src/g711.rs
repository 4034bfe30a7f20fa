//! G.711 (µ-law and A-law) to 16-bit linear PCM, as ITU-T G.711 / Sun's reference `g711.c`
//! define it; 256-entry tables built at compile time.

/// µ-law byte → linear sample.
pub const ULAW: [i16; 256] = build(false);
/// A-law byte → linear sample.
pub const ALAW: [i16; 256] = build(true);

const fn build(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    table
}

const fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let mantissa = (u & 0x0f) as i16;
    let exponent = ((u & 0x70) >> 4) as u32;
    let magnitude = ((mantissa << 3) + 0x84) << exponent;
    if u & 0x80 != 0 {
        0x84 - magnitude
    } else {
        magnitude - 0x84
    }
}

const fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mantissa = ((a & 0x0f) as i16) << 4;
    let segment = ((a & 0x70) >> 4) as u32;
    let magnitude = match segment {
        0 => mantissa + 8,
        1 => mantissa + 0x108,
        _ => (mantissa + 0x108) << (segment - 1),
    };
    if a & 0x80 != 0 { magnitude } else { -magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ULAW[0xff], 0);
        assert_eq!(ULAW[0x7f], 0);
        assert_eq!(ULAW[0x00], -32124);
        assert_eq!(ULAW[0x80], 32124);
        assert_eq!(ULAW[0xfe], 8);
        assert_eq!(ULAW[0x7e], -8);
        assert_eq!(ULAW[0xef], 132); // first step of segment 1
        assert_eq!(ULAW[0x8f], 16764); // values checked against Python's audioop
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(ALAW[0xd5], 8);
        assert_eq!(ALAW[0x55], -8);
        assert_eq!(ALAW[0xaa], 32256);
        assert_eq!(ALAW[0x2a], -32256);
        assert_eq!(ALAW[0xd4], 24);
        assert_eq!(ALAW[0xc5], 264); // first value of segment 1
    }

    #[test]
    fn tables_are_odd_symmetric_and_monotonic() {
        for i in 0..128usize {
            assert_eq!(ULAW[i], -ULAW[i | 0x80]);
            assert_eq!(ALAW[i], -ALAW[i | 0x80]);
        }
        // µ-law: larger codes (after inversion) are larger magnitudes within each sign half.
        let positive: Vec<i16> = (0x80..=0xffu8).rev().map(|b| ULAW[b as usize]).collect();
        assert!(positive.windows(2).all(|w| w[0] < w[1]));
        let mut alaw: Vec<i16> = (0x80..=0xffu8).map(|b| ALAW[(b ^ 0x55) as usize]).collect();
        alaw.dedup();
        assert_eq!(alaw.len(), 128);
    }
}
