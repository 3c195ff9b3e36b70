//! The behaviour every [`SessionStore`] must show, run against each backend.

use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::session::{SessionStore, StoreKey};

fn key(n: u8) -> StoreKey {
    StoreKey::hash(&[n; 8])
}

fn later() -> SystemTime {
    SystemTime::now() + Duration::from_secs(600)
}

fn earlier() -> SystemTime {
    SystemTime::now() - Duration::from_secs(1)
}

/// Runs the whole suite; `make(max_pending_logins)` builds a fresh, empty store.
pub(crate) async fn run<S, F, Fut>(make: F)
where
    S: SessionStore,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = S>,
{
    absent_keys_load_nothing(&make(100).await).await;
    create_is_atomic_and_never_overwrites(&make(100).await).await;
    update_replaces_but_never_resurrects(&make(100).await).await;
    delete_removes_and_is_idempotent(&make(100).await).await;
    expired_sessions_are_absent(&make(100).await).await;
    logins_are_single_use_and_expire(&make(100).await).await;
    pending_logins_are_bounded(&make(5).await).await;
    concurrent_creates_have_one_winner(Arc::new(make(100).await)).await;
    sessions_are_indexed_by_owner(&make(100).await).await;
    first_use_detects_replays(&make(100).await).await;
    replace_writes_only_over_the_expected_bytes(&make(100).await).await;
    make(100).await.ping().await.expect("ping");
}

async fn absent_keys_load_nothing(s: &impl SessionStore) {
    assert_eq!(s.load(&key(1)).await.unwrap(), None);
}

async fn create_is_atomic_and_never_overwrites(s: &impl SessionStore) {
    assert!(
        s.create(&key(1), Bytes::from_static(b"first"), later())
            .await
            .unwrap()
    );
    assert_eq!(
        s.load(&key(1)).await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
    assert!(
        !s.create(&key(1), Bytes::from_static(b"second"), later())
            .await
            .unwrap(),
        "create over a live key must fail"
    );
    assert_eq!(
        s.load(&key(1)).await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(s.load(&key(2)).await.unwrap(), None, "keys do not alias");
}

async fn update_replaces_but_never_resurrects(s: &impl SessionStore) {
    assert!(
        s.create(&key(1), Bytes::from_static(b"v1"), later())
            .await
            .unwrap()
    );
    assert!(
        s.update(&key(1), Bytes::from_static(b"v2"), later())
            .await
            .unwrap()
    );
    assert_eq!(s.load(&key(1)).await.unwrap().as_deref(), Some(&b"v2"[..]));
    assert!(
        !s.update(&key(2), Bytes::from_static(b"ghost"), later())
            .await
            .unwrap()
    );
    assert_eq!(
        s.load(&key(2)).await.unwrap(),
        None,
        "update must not create"
    );
    s.delete(&key(1)).await.unwrap();
    assert!(
        !s.update(&key(1), Bytes::from_static(b"late"), later())
            .await
            .unwrap(),
        "a late write must not undo a delete"
    );
    assert_eq!(s.load(&key(1)).await.unwrap(), None);
}

async fn delete_removes_and_is_idempotent(s: &impl SessionStore) {
    assert!(
        s.create(&key(1), Bytes::from_static(b"v"), later())
            .await
            .unwrap()
    );
    s.delete(&key(1)).await.unwrap();
    assert_eq!(s.load(&key(1)).await.unwrap(), None);
    s.delete(&key(1)).await.unwrap();
    s.delete(&key(9)).await.unwrap();
}

async fn expired_sessions_are_absent(s: &impl SessionStore) {
    assert!(
        s.create(&key(1), Bytes::from_static(b"old"), earlier())
            .await
            .unwrap()
    );
    assert_eq!(
        s.load(&key(1)).await.unwrap(),
        None,
        "expired records load as absent"
    );
    assert!(
        !s.update(&key(1), Bytes::from_static(b"x"), later())
            .await
            .unwrap(),
        "expired records cannot be updated"
    );
    assert!(
        s.create(&key(1), Bytes::from_static(b"new"), later())
            .await
            .unwrap(),
        "an expired key can be reused"
    );
    assert_eq!(s.load(&key(1)).await.unwrap().as_deref(), Some(&b"new"[..]));
    assert!(
        s.update(
            &key(1),
            Bytes::from_static(b"short"),
            SystemTime::now() + Duration::from_millis(300)
        )
        .await
        .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        s.load(&key(1)).await.unwrap(),
        None,
        "updates carry the new expiry"
    );
}

async fn logins_are_single_use_and_expire(s: &impl SessionStore) {
    s.put_login(&key(1), b"login".to_vec(), later())
        .await
        .unwrap();
    assert_eq!(
        s.load(&key(1)).await.unwrap(),
        None,
        "logins and sessions are separate"
    );
    assert_eq!(
        s.take_login(&key(1)).await.unwrap().as_deref(),
        Some(&b"login"[..])
    );
    assert_eq!(
        s.take_login(&key(1)).await.unwrap(),
        None,
        "a login is taken once"
    );
    s.put_login(&key(2), b"stale".to_vec(), earlier())
        .await
        .unwrap();
    assert_eq!(
        s.take_login(&key(2)).await.unwrap(),
        None,
        "expired logins are absent"
    );
}

async fn pending_logins_are_bounded(s: &impl SessionStore) {
    for i in 0..50u8 {
        let expires = SystemTime::now() + Duration::from_secs(600 + u64::from(i));
        s.put_login(&key(i), vec![i], expires).await.unwrap();
    }
    let mut kept = 0;
    for i in 0..50u8 {
        if s.take_login(&key(i)).await.unwrap().is_some() {
            kept += 1;
        }
    }
    assert!(
        (1..=5).contains(&kept),
        "kept {kept} of 50 logins with a bound of 5"
    );
    s.put_login(&key(100), b"fresh".to_vec(), later())
        .await
        .unwrap();
    assert!(
        s.take_login(&key(100)).await.unwrap().is_some(),
        "the newest login survives"
    );
}

async fn concurrent_creates_have_one_winner<S: SessionStore>(s: Arc<S>) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                s.create(&key(7), Bytes::from(vec![i]), later())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
}

async fn sessions_are_indexed_by_owner(s: &impl SessionStore) {
    let (alice, bob) = (key(100), key(101));
    s.index(&alice, &key(1), later()).await.unwrap();
    s.index(&alice, &key(2), later()).await.unwrap();
    s.index(&alice, &key(2), later()).await.unwrap();
    s.index(&bob, &key(3), later()).await.unwrap();
    let mut found = s.indexed(&alice).await.unwrap();
    found.sort();
    let mut expected = vec![key(1), key(2)];
    expected.sort();
    assert_eq!(found, expected, "each session once, only the owner's");
    assert_eq!(s.indexed(&bob).await.unwrap(), vec![key(3)]);
    s.forget(&alice).await.unwrap();
    assert!(s.indexed(&alice).await.unwrap().is_empty());
    assert_eq!(
        s.indexed(&bob).await.unwrap(),
        vec![key(3)],
        "forgetting one owner keeps the others"
    );
    assert!(s.indexed(&key(102)).await.unwrap().is_empty());
}

async fn replace_writes_only_over_the_expected_bytes(s: &impl SessionStore) {
    let (k, held) = (key(9), Bytes::from_static(b"read"));
    assert!(
        !s.replace(&k, &held, Bytes::from_static(b"x"), later())
            .await
            .unwrap(),
        "replace never creates"
    );
    assert!(s.create(&k, held.clone(), later()).await.unwrap());
    // A touch based on this read, racing a refresh that writes first.
    assert!(
        s.update(&k, Bytes::from_static(b"refreshed"), later())
            .await
            .unwrap()
    );
    assert!(
        !s.replace(&k, &held, Bytes::from_static(b"touched"), later())
            .await
            .unwrap(),
        "the refresh's write is not undone"
    );
    assert_eq!(
        s.load(&k).await.unwrap().as_deref(),
        Some(&b"refreshed"[..])
    );
    // Based on a current read, it writes (with a copy of the bytes, not the same buffer).
    let current = Bytes::copy_from_slice(b"refreshed");
    assert!(
        s.replace(&k, &current, Bytes::from_static(b"touched"), later())
            .await
            .unwrap()
    );
    assert_eq!(s.load(&k).await.unwrap().as_deref(), Some(&b"touched"[..]));
    s.delete(&k).await.unwrap();
    assert!(
        !s.replace(
            &k,
            &Bytes::from_static(b"touched"),
            Bytes::from_static(b"x"),
            later()
        )
        .await
        .unwrap(),
        "a deleted session stays deleted"
    );
    assert_eq!(s.load(&k).await.unwrap(), None);
}

async fn first_use_detects_replays(s: &impl SessionStore) {
    assert!(!s.is_used(&key(1)).await.unwrap());
    assert!(s.first_use(&key(1), later()).await.unwrap());
    assert!(s.is_used(&key(1)).await.unwrap(), "marked");
    assert!(
        !s.first_use(&key(1), later()).await.unwrap(),
        "a replay is detected"
    );
    assert!(s.first_use(&key(2), later()).await.unwrap());
    assert!(s.first_use(&key(3), earlier()).await.unwrap());
    assert!(
        !s.is_used(&key(3)).await.unwrap(),
        "an expired marker is no mark"
    );
    assert!(
        s.first_use(&key(3), later()).await.unwrap(),
        "an expired marker no longer counts"
    );
}
