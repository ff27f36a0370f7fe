// The dashboard in a real browser: Debian's chromium, driven by playwright-core, against a running
// `baton serve` that tests/tests/dashboard.rs set up with real builds. It signs in, reads every
// page, watches a build's page update live, cancels a build and replays a dead letter from their
// buttons, and saves a screenshot of each page under SHOTS. Any failed check exits non-zero.
//
// Environment: BASE (the server's URL), TOKEN, SHOTS (a folder), and DATA: JSON with the ids the
// Rust test made ({done, session, project, failed}). The builds it watches live and cancels, it
// enqueues itself, through the API with its sign-in cookie, so that it sees them from the start.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const base = process.env.BASE;
const token = process.env.TOKEN;
const shots = process.env.SHOTS;
const data = JSON.parse(process.env.DATA);
mkdirSync(shots, { recursive: true });

function check(ok, what) {
  if (!ok) throw new Error('check failed: ' + what);
  console.log('ok - ' + what);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const page = await (await browser.newContext()).newPage();
  const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

  // Signing in: a wrong token is refused, the right one sets the cookie and opens the overview.
  await page.goto(base + '/');
  check(page.url().endsWith('/login'), 'an unsigned visitor is sent to the sign-in page');
  await page.fill('#token', 'wrong');
  await page.click('button[type=submit]');
  check(await page.isVisible('.error'), 'a wrong token is refused');
  await page.fill('#token', token);
  await page.click('button[type=submit]');
  await page.waitForURL(base + '/');
  check((await page.textContent('h1')) === 'Overview', 'the overview opens after sign-in');
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'baton_session');
  check(session && session.httpOnly && session.secure && session.sameSite === 'Strict',
    'the sign-in cookie is HTTP-only, secure and SameSite=Strict');
  check(!session.value.includes(token), 'the cookie does not hold the token');
  check(Number(await page.textContent('#completed')) >= 1, 'the overview counts completed builds');
  check(await page.isVisible('figure svg'), 'the overview draws its charts');
  await shot('overview');

  // Builds: the list, its filter, one build's timeline.
  await page.goto(base + '/builds');
  check(await page.isVisible(`a[href="/builds/${data.done}"]`), 'the builds list shows a build');
  await shot('builds');
  await page.goto(base + '/builds?status=failed');
  const statuses = await page.$$eval('#rows .badge', (els) => els.map((e) => e.textContent));
  check(statuses.length >= 1 && statuses.every((s) => s === 'failed'), 'the status filter keeps failed builds only');
  await page.goto(base + `/builds/${data.done}`);
  check((await page.$$('#timeline > li')).length === 4, 'a create shows its four runs');
  check((await page.textContent('#timeline')).includes('Done: wrote'), "a run's answer is shown");
  await shot('build');

  // Live: a build's page follows its runs as they happen. Its prompt makes the CLI take seconds.
  const enqueue = async (project, prompt) => {
    const made = await page.request.post(base + '/v1/builds', {
      data: { kind: 'create', project_id: project, version_id: 'v1', prompt },
    });
    check(made.status() === 201, `the API takes a build with the sign-in cookie (${made.status()})`);
    return (await made.json()).build_id;
  };
  const slow = await enqueue('live', 'SLOW: build it');
  await page.goto(base + `/builds/${slow}`);
  check((await page.$$('#timeline > li')).length === 0, 'the build has no run when its page opens');
  await page.waitForSelector('#events li.run_finished', { timeout: 30000 });
  check(true, "a running build's events arrive live");
  await page.waitForFunction(() => document.querySelectorAll('#timeline > li').length >= 1, null, { timeout: 30000 });
  check(true, "the build's runs fill in without a reload");
  await page.waitForFunction(() => !document.getElementById('runs').textContent.includes('No run recorded yet'), null, { timeout: 10000 });
  check(true, "the page no longer says there is no run");
  await page.waitForSelector('#events li.job_completed', { timeout: 60000 });
  await page.waitForFunction(() => document.getElementById('status').textContent === 'completed', null, { timeout: 10000 });
  check(true, 'the status turns completed live');
  await shot('build-live');

  // Cancel from its button.
  const stuck = await enqueue('stuck', 'SLOW: never mind');
  await page.goto(base + `/builds/${stuck}`);
  await page.click('#cancel');
  await page.waitForURL(base + `/builds/${stuck}`);
  for (let i = 0; i < 100; i++) {
    if ((await page.textContent('#status')) === 'cancelled') break;
    await page.waitForTimeout(200);
    await page.reload();
  }
  check((await page.textContent('#status')) === 'cancelled', 'cancel from its button ends the build cancelled');
  await shot('build-cancelled');

  // The project: its chains as a graph with the thread's fork, its threads and builds.
  await page.goto(base + `/projects/${data.project}`);
  const graph = await page.innerHTML('.graph');
  check(graph.includes('thread t1') && graph.includes('forked'), 'the project graph shows the thread forked from main');
  await shot('project');

  // A session's conversation, readable.
  await page.goto(base + `/sessions/${data.session}`);
  check((await page.textContent('.conversation')).includes('Create index.html'), "a session's conversation is shown");
  check((await page.$$('.conversation li.assistant')).length >= 1, "the agent's answers are shown");
  await shot('session');

  // Dead letters: replay needs its box ticked, then puts the entry back.
  await page.goto(base + '/dead-letters');
  const row = page.locator('tr', { has: page.locator(`a[href="/builds/${data.failed}"]`) }).first();
  const letter = await row.getAttribute('id');
  check(letter !== null, "the failed build's dead letter is listed");
  await shot('dead-letters');
  await row.locator('form:has(button.replay) input[type=checkbox]').check();
  await row.locator('button.replay').click();
  await page.waitForURL(base + `/builds/${data.failed}`);
  check(true, 'replay leads to the build');
  await page.goto(base + '/dead-letters');
  check(!(await page.isVisible('#' + letter)), 'the replayed dead letter left the list');

  // The search box.
  await page.goto(base + '/');
  await page.fill('#find', data.project);
  await page.press('#find', 'Enter');
  await page.waitForURL(base + `/projects/${data.project}`);
  check(true, 'the search box opens a project');
} finally {
  await browser.close();
}
