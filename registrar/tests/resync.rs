//! The drive loop keeps answering SIP while the store cannot give it a fresh view: a resync
//! is fetched in the background and loaded when the store is back.
#![allow(clippy::unwrap_used, reason = "test code")]

use kubepbx_api::extension::RecordingPolicy;
use kubepbx_api::ha1::Ha1Set;
use kubepbx_api::records::ExtensionRecord;
use kubepbx_api::store::{
    EmbeddedOptions, EmbeddedStore, Event, Snapshot, Store, StoreError, Subscription, Write,
};
use kubepbx_registrar::calls::CdrStorage;
use kubepbx_registrar::{Setup, SipListeners};
use kubepbx_sip::auth::NonceConfig;
use kubepbx_sip::ban::BanConfig;
use kubepbx_sip::endpoint::EndpointConfig;
use kubepbx_sip::registrar::RegistrarConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// An embedded store whose `watch` can be made to fail, and whose subscription the test feeds.
#[derive(Debug)]
struct FlakyStore {
    inner: EmbeddedStore,
    failing: AtomicBool,
    events: broadcast::Sender<Event>,
}

#[async_trait::async_trait]
impl Store for FlakyStore {
    async fn watch(&self) -> Result<(Snapshot, Subscription), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("etcd is down (test)".into()));
        }
        let (snapshot, _) = self.inner.watch().await?;
        Ok((snapshot, Subscription::new(self.events.subscribe())))
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.inner.apply(writes).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
}

fn record(ext: &str) -> ExtensionRecord {
    ExtensionRecord {
        domain: "pbx.example.com".into(),
        extension: ext.into(),
        display_name: None,
        ha1: Ha1Set::derive(ext, "pbx.example.com", "secret"),
        enabled: true,
        disabled_reason: None,
        max_contacts: 5,
        recording: RecordingPolicy::Never,
        source: format!("default/ext-{ext}"),
        generation: 1,
    }
}

/// Sends an OPTIONS and waits for its 200.
async fn options_answered(to: std::net::SocketAddr, n: u32) -> bool {
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = phone.local_addr().unwrap();
    let msg = format!(
        "OPTIONS sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKopt{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@pbx.example.com>;tag=p{n}\r\n\
         To: <sip:pbx.example.com>\r\nCall-ID: opt-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    phone.send_to(msg.as_bytes(), to).await.unwrap();
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(Duration::from_secs(2), phone.recv_from(&mut buf)).await {
        Ok(Ok((len, _))) => buf[..len].starts_with(b"SIP/2.0 200"),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_is_answered_while_the_store_cannot_resync() {
    let inner = EmbeddedStore::open(None, EmbeddedOptions::default())
        .await
        .unwrap();
    inner
        .apply(vec![Write::PutExtension(record("1001"))])
        .await
        .unwrap();
    let (events, _) = broadcast::channel(16);
    let store = Arc::new(FlakyStore {
        inner,
        failing: AtomicBool::new(false),
        events,
    });
    let listeners = SipListeners::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sip = listeners.local_addr().unwrap();
    let config = EndpointConfig {
        replica: "test".into(),
        default_domain: "pbx.example.com".into(),
        advertise: sip.to_string(),
        advertise_tls: None,
        anchor_media: false,
        local_hosts: vec!["127.0.0.1".into()],
        registrar: RegistrarConfig::default(),
        bans: BanConfig::default(),
        nonce: NonceConfig::default(),
        secret: [9; 32],
        instance: 0,
        challenge: Vec::new(),
        cluster: None,
    };
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let setup = Setup {
        config,
        listeners,
        store: Arc::clone(&store) as Arc<dyn Store>,
        media: None,
        cdrs: CdrStorage::Memory,
        cluster: None,
    };
    let registrar = kubepbx_registrar::start(setup, shutdown.clone(), &tasks)
        .await
        .unwrap();
    assert!(options_answered(sip, 1).await);

    // The store loses events and cannot give a snapshot: SIP keeps being answered.
    store.failing.store(true, Ordering::SeqCst);
    store.events.send(Event::Resync).unwrap();
    store
        .inner
        .apply(vec![Write::PutExtension(record("1002"))])
        .await
        .unwrap();
    for n in 2..5 {
        assert!(options_answered(sip, n).await, "OPTIONS {n} unanswered");
    }
    let known = |list: Vec<kubepbx_registrar::views::ExtensionView>| -> Vec<String> {
        list.into_iter().map(|e| e.extension).collect()
    };
    assert_eq!(known(registrar.extensions().await.unwrap()), ["1001"]);

    // The store is back: the fresh view (with 1002) is loaded within the retry interval.
    store.failing.store(false, Ordering::SeqCst);
    let mut caught_up = false;
    for _ in 0..50 {
        if known(registrar.extensions().await.unwrap()) == ["1001", "1002"] {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(caught_up, "the view never caught up");
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
}
