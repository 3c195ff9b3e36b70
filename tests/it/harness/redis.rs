//! A real `redis-server` on 127.0.0.1 that can be stopped and started again with its data
//! (append-only file in a temporary folder), killed by PID when dropped: the launcher shared
//! with the store's unit tests.

#[path = "../../support/redis.rs"]
mod launcher;

pub use launcher::RedisServer as Redis;
