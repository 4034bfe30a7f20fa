//! The server-transaction table under a registration storm, without sockets: N non-INVITE
//! transactions over UDP, 40,000 per simulated second (20,000 registrations/s, two requests
//! each), each answered at once and kept for Timer J (32 s), with due timers fired before each
//! request as the drive loop does. Reports the wall time of the whole run, the longest single
//! step (timers + request + response) and how many steps took over 1 ms: a long step is a stall
//! of the drive loop, during which datagrams pile up in the socket.
//!
//! ```text
//! cargo run --release -p kubepbx-sip --example transactions_bench -- [N]   (default 2,000,000)
//! ```

use bytes::Bytes;
use kubepbx_sip::flow::Flow;
use kubepbx_sip::message::{Message, parse};
use kubepbx_sip::transaction::{ServerTransactions, TxKey};
use std::time::{Duration, Instant};

fn main() {
    let n: u64 = match std::env::args().nth(1).map(|s| s.parse()) {
        None => 2_000_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("transactions_bench: N must be a number of transactions: {e}");
            std::process::exit(2);
        }
    };
    let flow = Flow::udp("10.0.0.1:5060".parse().expect("an address"));
    // Keys first, so the run measures the table and nothing else.
    let keys: Vec<_> = (0..n)
        .map(|i| {
            let text = format!(
                "REGISTER sip:pbx.example.com SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{i}\r\n\
                 From: <sip:1001@pbx.example.com>;tag=a\r\nTo: <sip:1001@pbx.example.com>\r\n\
                 Call-ID: c{i}\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
            );
            let Ok(Message::Request(request)) = parse(Bytes::from(text)) else {
                unreachable!("the request above parses")
            };
            let essentials = request
                .essentials()
                .expect("the request has its essentials");
            let key = TxKey::for_request(&request.method, &essentials);
            (request.method, key)
        })
        .collect();

    let mut table = ServerTransactions::new();
    let response = Bytes::from(vec![b'x'; 400]);
    let mut retransmits = Vec::new();
    let (mut worst, mut over_1ms) = (Duration::ZERO, 0u64);
    let start = Instant::now();
    for (i, (method, key)) in (0u64..).zip(&keys) {
        let now = start + Duration::from_micros(25 * i);
        let step = Instant::now();
        table.handle_timeout(now, &mut retransmits);
        table.on_request(*key, method, flow, now);
        table.on_response(key, 200, response.clone(), now);
        let took = step.elapsed();
        worst = worst.max(took);
        over_1ms += u64::from(took > Duration::from_millis(1));
    }
    println!(
        "{n} transactions, {} live at the end: {:.2} s in all, longest step {:.2} ms, \
         {over_1ms} steps over 1 ms",
        table.len(),
        start.elapsed().as_secs_f64(),
        worst.as_secs_f64() * 1e3,
    );
}
