// Baton's dashboard, the few live parts: a builds list that refreshes itself, and a build's events
// as they arrive (server-sent events from the API, through the sign-in cookie). Every page reads
// without this script.
(function () {
  'use strict';
  const rows = document.getElementById('rows');
  if (rows && rows.dataset.live) {
    setInterval(async () => {
      try {
        const r = await fetch(rows.dataset.live, { credentials: 'same-origin' });
        if (r.ok) rows.innerHTML = await r.text();
      } catch (e) { /* the next tick tries again */ }
    }, 2000);
  }
  const events = document.getElementById('events');
  if (events && events.dataset.build && window.EventSource) {
    const build = events.dataset.build;
    const source = new EventSource('/v1/builds/' + encodeURIComponent(build) + '/events');
    // The page's summary and runs are the ledger's; they are fetched again after each run ends.
    const refresh = async () => {
      const r = await fetch(location.pathname, { credentials: 'same-origin' });
      if (!r.ok) return;
      const page = new DOMParser().parseFromString(await r.text(), 'text/html');
      for (const id of ['summary', 'runs']) {
        const fresh = page.getElementById(id);
        const here = document.getElementById(id);
        if (fresh && here) here.replaceWith(fresh);
      }
    };
    const kinds = ['job_started', 'run_started', 'session_seen', 'run_finished', 'job_completed',
      'job_failed', 'job_cancelled', 'job_requeued'];
    for (const kind of kinds) {
      source.addEventListener(kind, (e) => {
        const data = JSON.parse(e.data);
        const li = document.createElement('li');
        li.className = 'event ' + kind;
        li.textContent = kind + (data.step ? ' ' + data.step : '') +
          (data.session_id ? ' session ' + data.session_id : '') +
          (data.outcome ? ' (' + data.outcome + ')' : '') + (data.error ? ': ' + data.error : '');
        events.appendChild(li);
        if (kind !== 'session_seen' && kind !== 'run_started') refresh();
        if (kind === 'job_completed' || kind === 'job_failed' || kind === 'job_cancelled') source.close();
      });
    }
  }
})();
