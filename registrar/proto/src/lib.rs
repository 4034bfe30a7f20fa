//! Sans-IO SIP for kubepbx: bytes and time in, bytes to send, store writes and events out.
//!
//! # Layout
//!
//! - [`message`]: parsing datagrams and stream frames into requests and responses.
//! - [`headers`]: a message's header fields, as received.
//! - [`framing`]: cutting a TCP/TLS byte stream into messages; CRLF keep-alives (RFC 5626).
//! - [`forward`]: rewriting requests and responses the proxy forwards; CANCEL and ACK it makes.
//! - [`flow`]: flows (where bytes come from and go to) and transmits.
//! - [`builder`]: building responses (Via `received`/`rport`, To tags).
//! - [`client`]: client transactions (RFC 3261 §17.1) for what the proxy forwards.
//! - [`transaction`]: server transactions (RFC 3261 §17.2) — retransmissions are answered from
//!   the stored response, never reprocessed.
//! - [`auth`]: digest authentication (RFC 7616/8760): challenges, stateless nonces, verification.
//! - [`registrar`]: REGISTER processing (RFC 3261 §10.3, RFC 5626 instance/reg-id).
//! - [`location`]: the in-memory view of extensions and bindings, fed by store events.
//! - [`token`]: signed tokens naming a flow or a replica, for headers other replicas echo.
//! - [`ban`]: per-source failure counting and bans.
//! - [`endpoint`]: ties it together: the one object a driver owns and feeds.
//!
//! Nothing here opens a socket, spawns a task or reads a clock: the caller passes `now`.

pub mod auth;
pub mod ban;
pub mod builder;
pub mod client;
pub mod endpoint;
pub mod flow;
pub mod forward;
pub mod framing;
pub mod headers;
pub mod location;
pub mod message;
pub mod registrar;
pub mod token;
pub mod transaction;
