//! Integration tests: Sallyport against real servers on 127.0.0.1.

// Modules of one test binary share items with `pub`; nothing is exported.
#![allow(unreachable_pub)]

mod harness;

mod admin;
mod attacks;
mod authz;
mod backchannel;
mod bearer;
mod broker;
mod caddy;
mod cli;
mod dpop;
mod fapi2;
mod forward;
mod fuzz_corpus;
mod id_tokens;
mod keys;
mod limits;
mod login;
mod metrics;
mod multi;
mod nginx;
mod par;
mod pdp;
mod process;
mod proxy;
mod refresh;
mod registration;
mod reload;
mod spa;
mod step_up;
mod stores;
mod streaming;
mod traces;
