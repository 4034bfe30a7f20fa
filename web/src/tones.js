// Ring tone (incoming call) and ringback (the other phone rings), made with WebAudio: no sound
// file to load. Browsers start an AudioContext only after a user gesture, so `unlock()` is
// called from the login click.

/** One cadence: frequencies played together, and on/off seconds repeating. */
const RING = { freqs: [440, 480], pattern: [0.4, 0.2, 0.4, 2.0], gain: 0.18 };
const RINGBACK = { freqs: [425], pattern: [1.0, 4.0], gain: 0.1 };

export class Tones {
  constructor() {
    this.ctx = null;
    this.playing = null;
  }

  /** Creates or resumes the AudioContext; call from a click handler. */
  unlock() {
    try {
      if (!this.ctx) {
        const Ctx = window.AudioContext || window.webkitAudioContext;
        if (!Ctx) return;
        this.ctx = new Ctx();
      }
      if (this.ctx.state === 'suspended') this.ctx.resume().catch(() => {});
    } catch (e) {
      console.warn('audio unavailable:', e);
    }
  }

  /** Starts the incoming-call ring (stops any other tone). */
  ring() {
    this.play('ring', RING);
  }

  /** Starts the ringback heard while the called phone rings. */
  ringback() {
    this.play('ringback', RINGBACK);
  }

  /** What is playing: 'ring', 'ringback' or null. */
  get current() {
    return this.playing ? this.playing.name : null;
  }

  play(name, { freqs, pattern, gain }) {
    if (this.current === name) return;
    this.stop();
    this.unlock();
    const ctx = this.ctx;
    if (!ctx) return;
    const out = ctx.createGain();
    out.gain.value = 0;
    out.connect(ctx.destination);
    const oscillators = freqs.map((f) => {
      const o = ctx.createOscillator();
      o.type = 'sine';
      o.frequency.value = f;
      o.connect(out);
      o.start();
      return o;
    });
    const period = pattern.reduce((a, b) => a + b, 0);
    // Schedules one period of the cadence from `start`, with 10 ms ramps (no clicks).
    const schedule = (start) => {
      let t = start;
      pattern.forEach((len, i) => {
        if (i % 2 === 0) {
          out.gain.setValueAtTime(0, t);
          out.gain.linearRampToValueAtTime(gain / freqs.length, t + 0.01);
          out.gain.setValueAtTime(gain / freqs.length, t + len - 0.01);
          out.gain.linearRampToValueAtTime(0, t + len);
        }
        t += len;
      });
    };
    let next = ctx.currentTime + 0.05;
    schedule(next);
    next += period;
    // Keeps one period scheduled ahead.
    const timer = setInterval(() => {
      while (next < ctx.currentTime + period) {
        schedule(next);
        next += period;
      }
    }, 500);
    this.playing = { name, out, oscillators, timer };
  }

  stop() {
    const p = this.playing;
    if (!p) return;
    this.playing = null;
    clearInterval(p.timer);
    for (const o of p.oscillators) {
      try {
        o.stop();
      } catch {
        // already stopped
      }
      o.disconnect();
    }
    p.out.disconnect();
  }
}
