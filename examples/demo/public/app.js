// Sallyport demo page. Same origin as the gateway; no tokens ever reach this code.
'use strict';

const $ = (id) => document.getElementById(id);
let csrfToken = null;

function showError(message) {
  const el = $('error');
  el.textContent = message;
  el.hidden = !message;
}

function render(session) {
  $('loading').hidden = true;
  $('logged-out').hidden = session.authenticated;
  $('logged-in').hidden = !session.authenticated;
  if (!session.authenticated) {
    csrfToken = null;
    $('api').hidden = true;
    if (session.login_url) {
      const url = new URL(session.login_url, location.origin);
      if (!url.searchParams.has('return_to')) url.searchParams.set('return_to', '/');
      $('login').href = url.pathname + url.search;
    }
    return;
  }
  const user = session.user || {};
  csrfToken = session.csrf_token;
  $('user-name').textContent = user.name || user.preferred_username || user.email || user.sub;
  $('expires-at').textContent = session.expires_at
    ? new Date(session.expires_at * 1000).toLocaleString()
    : 'unknown';
  $('claims').textContent = JSON.stringify(user, null, 2);
}

async function loadSession() {
  showError('');
  try {
    const res = await fetch('/api/auth/session', {
      credentials: 'same-origin',
      headers: { Accept: 'application/json' },
    });
    if (res.status !== 200 && res.status !== 401) throw new Error(`session check failed: HTTP ${res.status}`);
    render(await res.json());
  } catch (err) {
    $('loading').hidden = true;
    showError(err.message);
  }
}

async function callApi() {
  showError('');
  $('api').hidden = false;
  $('api-status').textContent = '…';
  $('api-result').textContent = '';
  try {
    const res = await fetch('/api/echo/hello?x=1', { credentials: 'same-origin' });
    $('api-status').textContent = `HTTP ${res.status}`;
    const text = await res.text();
    try {
      $('api-result').textContent = JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      $('api-result').textContent = text;
    }
    if (res.status === 401) await loadSession();
  } catch (err) {
    $('api-status').textContent = 'failed';
    showError(err.message);
  }
}

async function logout() {
  showError('');
  try {
    const res = await fetch('/auth/logout', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrfToken || '', Accept: 'application/json' },
    });
    if (!res.ok) throw new Error(`logout failed: HTTP ${res.status}`);
    const { redirect_to: redirectTo } = await res.json();
    location.href = redirectTo || '/';
  } catch (err) {
    showError(err.message);
  }
}

$('call-api').addEventListener('click', callApi);
$('logout').addEventListener('click', logout);
loadSession();
