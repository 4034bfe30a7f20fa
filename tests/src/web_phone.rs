//! The web phone (`web/src/phone.js`, served at `/phone/`) in a [`Browser`] page: open it and
//! log in, dial, press dial-pad keys, read the call's audio counters, its duration and the mute
//! button.
//!
//! ```text
//! log_in(&browser, "web", "http://127.0.0.1:8080", "1001", pw, 20 s)  open /phone/, log in,
//!                                                                     wait for "registered"
//! dial(&browser, "web", "1002")                                       number field, Call
//! press_keys(&browser, "web", "15#")                                  key-1, key-5, key-hash
//! wait_for_audio_both_ways(&browser, "web", 20 s)                     getStats() counters
//! ```
//!
//! Waiting steps fail with what the page showed last; callers add their own context (the PBX's
//! log, the other phone's output).

use std::time::Duration;

use serde_json::Value;

use crate::browser::Browser;
use crate::error::{Error, Result};
use crate::wait::wait_until;

/// Packets each way that make a call's audio "flowing": a second of 20 ms packets and more.
const FLOWING_PACKETS: f64 = 50.0;

/// Opens the web phone of the PBX at `http_url` (`http://host:port`, no trailing slash) as
/// `page` and logs in as `extension`; waits up to `timeout` for the status `registered`.
pub fn log_in(
    browser: &Browser,
    page: &str,
    http_url: &str,
    extension: &str,
    password: &str,
    timeout: Duration,
) -> Result<()> {
    browser.open(page, &format!("{http_url}/phone/"))?;
    browser.login(page, extension, password)?;
    browser.wait_text(page, "status", "^registered$", timeout)?;
    Ok(())
}

/// Types `number` and clicks Call.
pub fn dial(browser: &Browser, page: &str, number: &str) -> Result<()> {
    browser.fill(page, "number", number)?;
    browser.click(page, "call")
}

/// The `data-testid` of the dial-pad key for `key` (`0`-`9`, `*`, `#`).
pub fn key_testid(key: char) -> Option<String> {
    match key {
        '0'..='9' => Some(format!("key-{key}")),
        '*' => Some("key-star".to_owned()),
        '#' => Some("key-hash".to_owned()),
        _ => None,
    }
}

/// Clicks the dial-pad key of every character of `keys`, in order: during a call each sends a
/// tone (DTMF), before one it types the number.
pub fn press_keys(browser: &Browser, page: &str, keys: &str) -> Result<()> {
    for key in keys.chars() {
        let testid = key_testid(key)
            .ok_or_else(|| Error::Invalid(format!("no dial-pad key for {key:?} in {keys:?}")))?;
        browser.click(page, &testid)?;
    }
    Ok(())
}

/// Waits up to `timeout` until the page's call has audio both ways: packets sent and received
/// (`FLOWING_PACKETS` each) and a received level above silence. Returns the last counters
/// ([`Browser::phone_stats`]); the error carries them.
pub fn wait_for_audio_both_ways(browser: &Browser, page: &str, timeout: Duration) -> Result<Value> {
    let mut last = Value::Null;
    let flowing = wait_until(timeout, || {
        let Ok(stats) = browser.phone_stats(page) else {
            return false;
        };
        last = stats;
        audio_flows(&last)
    });
    if flowing {
        Ok(last)
    } else {
        Err(Error::Invalid(format!(
            "{page}: no audio both ways within {timeout:?}; last counters: {last}"
        )))
    }
}

/// Whether `stats` (of [`Browser::phone_stats`]) show audio both ways.
fn audio_flows(stats: &Value) -> bool {
    let number = |v: &Value| v.as_f64().unwrap_or(0.0);
    number(&stats["inbound"]["packetsReceived"]) > FLOWING_PACKETS
        && number(&stats["outbound"]["packetsSent"]) > FLOWING_PACKETS
        && (number(&stats["inbound"]["audioLevel"]) > 0.0
            || number(&stats["inbound"]["totalAudioEnergy"]) > 0.0)
}

/// Seconds shown by the call's duration counter (`mm:ss`).
pub fn shown_seconds(browser: &Browser, page: &str) -> Result<u64> {
    let text = browser.text(page, "duration")?;
    parse_duration(&text)
        .ok_or_else(|| Error::Invalid(format!("{page}: the duration shows {text:?}, not mm:ss")))
}

fn parse_duration(text: &str) -> Option<u64> {
    let (m, s) = text.trim().split_once(':')?;
    Some(m.parse::<u64>().ok()? * 60 + s.parse::<u64>().ok()?)
}

/// What the Mute button shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuteButton {
    /// Its `aria-pressed`: whether the microphone is muted.
    pub pressed: bool,
    /// Its label (`Mute`, `Unmute`).
    pub text: String,
}

/// Reads the Mute button of `page`.
pub fn mute_button(browser: &Browser, page: &str) -> Result<MuteButton> {
    let pressed = browser.eval(
        page,
        "document.querySelector('[data-testid=\"mute\"]')?.getAttribute('aria-pressed') ?? null",
    )?;
    Ok(MuteButton {
        pressed: pressed.as_str() == Some("true"),
        text: browser.text(page, "mute")?.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_dial_pad_key_has_its_test_id() {
        assert_eq!(key_testid('7').as_deref(), Some("key-7"));
        assert_eq!(key_testid('*').as_deref(), Some("key-star"));
        assert_eq!(key_testid('#').as_deref(), Some("key-hash"));
        assert_eq!(key_testid('A'), None);
    }

    #[test]
    fn durations_read_as_seconds() {
        assert_eq!(parse_duration(" 01:05 "), Some(65));
        assert_eq!(parse_duration("00:00"), Some(0));
        assert_eq!(parse_duration("--"), None);
    }

    #[test]
    fn audio_flows_needs_packets_both_ways_and_a_level() {
        let stats = |received, sent, level| {
            json!({"inbound": {"packetsReceived": received, "audioLevel": level,
                               "totalAudioEnergy": null},
                   "outbound": {"packetsSent": sent}})
        };
        assert!(audio_flows(&stats(100, 100, 0.2)));
        assert!(!audio_flows(&stats(100, 100, 0.0)));
        assert!(!audio_flows(&stats(100, 10, 0.2)));
        assert!(!audio_flows(&stats(10, 100, 0.2)));
        assert!(!audio_flows(&Value::Null));
    }
}
