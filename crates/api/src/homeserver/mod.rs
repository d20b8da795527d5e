//! Vouch in front of a homeserver (`[homeserver]`): the introspection endpoint Synapse asks
//! about every token, the discovery document it reads, and the forwarder that gives
//! clients one port for everything.

pub mod account_page;
pub mod discovery;
pub mod introspect;
pub mod proxy;
