// t/web.t's browser: the chat page in headless Chromium (Debian's, at
// RAGNX_CHROMIUM), driven by puppeteer-core as a person would use it,
// keyboard first.  Prints one JSON line per check:
// {"ok": true|false, "name": "...", "diag": "..."}; t/web.t makes each an
// ok().  Every wait is bounded.
//
// Environment: RAGNX_WEB_URL (the page), RAGNX_MOCK_URL (the mock LLM's
// control), RAGNX_SHOTS (a directory for the screenshots).

'use strict';

const fs = require('fs');
const path = require('path');
const puppeteer = require('puppeteer-core');

const BASE = process.env.RAGNX_WEB_URL;
const MOCK = process.env.RAGNX_MOCK_URL;
const SHOTS = process.env.RAGNX_SHOTS;
const WAIT = Number(process.env.RAGNX_WEB_WAIT_MS || 30000);

function check(ok, name, diag) {
    const line = { ok: !!ok, name };
    if (!ok && diag !== undefined) {
        line.diag = typeof diag === 'string' ? diag : JSON.stringify(diag);
    }
    process.stdout.write(JSON.stringify(line) + '\n');
    return !!ok;
}

const text = (page, sel) =>
    page.$eval(sel, (e) => e.textContent.trim()).catch(() => null);
const visible = (page, sel) =>
    page.$eval(sel, (e) => !e.closest('[hidden]')).catch(() => false);

async function waitText(page, sel, re) {
    try {
        await page.waitForFunction((s, src) => {
            const e = document.querySelector(s);
            return e && !e.closest('[hidden]')
                   && new RegExp(src).test(e.textContent);
        }, { timeout: WAIT }, sel, re.source);
        return true;
    } catch (e) {
        return false;
    }
}

// whether the element with this id gets the focus (within the bound)
async function focused(page, id) {
    return page.waitForFunction((i) => document.activeElement
                                       && document.activeElement.id === i,
                                { timeout: WAIT }, id)
        .then(() => true, () => false);
}

async function mock(settings) {
    const r = await fetch(`${MOCK}/_mock`, {
        method: 'POST', body: JSON.stringify(settings) });
    return r.ok;
}

// the API directly, as the page's user (the token the page holds)
async function apiAsk(page, query) {
    return page.evaluate(async (q) => {
        const r = await fetch('/api/ask', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json',
                       Authorization: 'Bearer '
                           + sessionStorage.getItem('ragnx.token') },
            body: JSON.stringify({ query: q }),
        });
        return r.status;
    }, query);
}

async function fill(page, sel, value) {
    await page.$eval(sel, (e) => { e.value = ''; });
    await page.focus(sel);
    if (value !== '') {
        await page.keyboard.type(value);
    }
}

// a submit by keyboard: Enter in the form's last field
async function submitWith(page, sel) {
    await page.focus(sel);
    await page.keyboard.press('Enter');
}

async function main() {
    const browser = await puppeteer.launch({
        executablePath: process.env.RAGNX_CHROMIUM || '/usr/bin/chromium',
        headless: true,
        // root in a container has no user namespaces for the sandbox
        args: ['--no-sandbox', '--disable-gpu', '--no-first-run',
               '--disable-dev-shm-usage', '--font-render-hinting=none'],
        protocolTimeout: WAIT * 2,
    });
    const csp = [];
    const pageErrors = [];
    try {
        const page = await browser.newPage();
        page.setDefaultTimeout(WAIT);
        await page.setViewport({ width: 1280, height: 900 });
        await page.exposeFunction('ragnxCspViolation',
                                  (v) => csp.push(v));
        await page.evaluateOnNewDocument(() => {
            document.addEventListener('securitypolicyviolation', (e) => {
                window.ragnxCspViolation(`${e.violatedDirective} `
                                         + `${e.blockedURI}`);
            });
        });
        page.on('console', (m) => {
            if (/Content Security Policy|Refused to/i.test(m.text())) {
                csp.push(`console: ${m.text()}`);
            }
        });
        page.on('pageerror', (e) => pageErrors.push(String(e)));

        // ---- register: a bad email and password first ----------------

        await page.goto(BASE, { waitUntil: 'load' });
        check(await visible(page, '#auth'), 'the page opens on the sign-in');
        const title = await page.title();
        check(title === 'ragnx', 'the page\'s title', title);

        // the page's event parser: CRLF and a character split across
        // reads, comments skipped, data lines joined
        const parsed = await page.evaluate(async () => {
            const { events } = await import('/js/sse.js');
            const enc = new TextEncoder();
            const all = enc.encode(': ping\r\n\r\nevent: delta\r\n'
                + 'id: 1-0\r\ndata: {"text":"d\u00e9j\u00e0"}\r\n\r\n'
                + 'data: x\ndata:y\n\n');
            const cuts = [7, 8, 23, 50, 57, 59, all.length];
            const body = new ReadableStream({ start(c) {
                let from = 0;
                for (const to of cuts) {
                    c.enqueue(all.slice(from, to));
                    from = to;
                }
                c.close();
            } });
            const out = [];
            for await (const e of events(body)) {
                out.push(e);
            }
            return out;
        });
        check(JSON.stringify(parsed) === JSON.stringify([
            { event: 'delta', data: '{"text":"d\u00e9j\u00e0"}', id: '1-0' },
            { event: 'message', data: 'x\ny', id: null }]),
              'the event parser: CRLF, split characters, comments', parsed);

        await fill(page, '#register-email', 'not-an-email');
        await fill(page, '#register-password', 'short');
        await submitWith(page, '#register-name');
        check(await waitText(page, '#register-email-error', /\S/),
              'a bad email: the API\'s error under the email field',
              await text(page, '#register-email-error'));
        check(await text(page, '#register-password-error'),
              '... and the password\'s under the password field');
        check(await page.$eval('#register-email',
                               (e) => e.getAttribute('aria-invalid'))
              === 'true', '... the email field marked invalid');
        check(await focused(page, 'register-email'), '... and focused');

        const email = `web-${Date.now()}@example.com`;
        const password = 'correct horse battery';
        await fill(page, '#register-email', email);
        await fill(page, '#register-password', password);
        await fill(page, '#register-name', 'Web Tester');
        await page.keyboard.press('Enter');
        check(await waitText(page, '#whoami', new RegExp(email)),
              'registered: signed in, the user shown',
              await text(page, '#whoami'));
        check(await focused(page, 'question'),
              '... the question field focused');

        // ---- ask: the answer streams in ----------------------------------

        const q1 = 'How does the chat page stream an answer?';
        await mock({ chunk_ms: 250, delay_ms: 0 });
        await page.evaluate(() => {
            // the answer's length as the page shows it, every 20 ms
            window.ragnxSamples = [];
            const t0 = performance.now();
            window.ragnxSample = () => {
                const a = document.querySelector(
                    '#messages .message.assistant:last-child .text');
                const s = document.querySelector(
                    '#messages .message.assistant:last-child .sources');
                window.ragnxSamples.push({
                    t: Math.round(performance.now() - t0),
                    len: a ? a.textContent.length : -1,
                    sources: !!s,
                });
            };
            window.ragnxSampler = setInterval(window.ragnxSample, 20);
        });
        await page.focus('#question');
        await page.keyboard.type(q1);
        await page.keyboard.press('Enter');
        const done1 = await waitText(page,
            '#messages .message.assistant:last-child .sources', /Sources/);
        const samples = await page.evaluate(() => {
            clearInterval(window.ragnxSampler);
            window.ragnxSample();
            return window.ragnxSamples;
        });
        check(done1, 'the answer ends with its sources');
        const answer1 = await text(page,
            '#messages .message.assistant:last-child .text');
        check(answer1 === `Mock answer to: ${q1}`, 'the whole answer shown',
              answer1);
        const full = answer1 ? answer1.length : 0;
        const partial = samples.filter((s) => s.len > 0 && s.len < full
                                              && !s.sources);
        const first = samples.find((s) => s.len > 0);
        const last = samples.find((s) => s.sources);
        const lens = [...new Set(partial.map((s) => s.len))];
        check(partial.length > 0 && lens.length >= 2,
              `deltas shown as they came: ${lens.length} partial lengths `
              + `before the end (${lens.slice(0, 8).join(', ')}, ... of `
              + `${full})`, samples.slice(0, 40));
        check(first && last && last.t - first.t >= 500,
              `the first words ${first && last ? last.t - first.t : '?'} ms `
              + 'before the sources', { first, last });
        const srcs = await page.$$eval(
            '#messages .message.assistant:last-child .sources li',
            (l) => l.map((e) => e.textContent));
        check(srcs.some((s) => /page\.md$/.test(s)),
              'the sources: the ingested document', srcs);
        check(await waitText(page,
            '#messages .message.assistant:last-child .who', /written now/),
              'not from the cache');
        check(await page.$eval('#messages', (e) =>
            e.closest('[aria-live]') !== null), 'the answer is in an '
              + 'aria-live region');

        // ---- a second question in the same chat ------------------------

        await mock({ chunk_ms: 0 });
        const chatA = await page.evaluate(() => location.hash);
        check(/^#chat=[0-9a-f-]{36}$/.test(chatA), 'the new chat is open',
              chatA);
        await waitText(page, '#chat-list', /How does the chat page/);
        const q2 = 'And what does the page show next to the answer?';
        await page.focus('#question');
        await page.keyboard.type(q2);
        await page.keyboard.press('Enter');
        const four = await page.waitForFunction(() => {
            const m = document.querySelectorAll('#messages .message');
            return m.length === 4 && m[3].querySelector('.sources');
        }, { timeout: WAIT }).then(() => true, () => false);
        check(four, 'asked in the same chat: answered, four messages',
              await page.$$eval('#messages .message',
                                (l) => l.map((e) => e.textContent)));
        if (SHOTS) {
            await page.screenshot({ path: path.join(SHOTS, 'web-1280.png') });
        }
        check(await page.evaluate(() => location.hash) === chatA,
              '... still the same chat');

        // ---- the first question again in a new chat: the cache -----------

        await page.click('#new-chat');
        check(await focused(page, 'question')
              && (await page.$$('#messages .message')).length === 0,
              'a new chat: empty, the question focused');
        await page.keyboard.type(q1);
        await page.keyboard.press('Enter');
        check(await waitText(page,
            '#messages .message.assistant:last-child .who',
            /from the cache/), 'the same question again: from the cache');
        check(await waitText(page,
            '#messages .message.assistant:last-child .sources', /Sources/),
              '... with its sources');
        const chatB = await page.evaluate(() => location.hash);
        check(chatB !== chatA && /^#chat=/.test(chatB),
              '... in a chat of its own');

        // ---- reload: the history -----------------------------------------

        await page.goto(BASE, { waitUntil: 'load' });
        await waitText(page, '#chat-list', /\S/);
        const chats = await page.$$eval('#chat-list button',
            (l) => l.map((b) => ({ id: b.dataset.chatId,
                                   title: b.firstChild.textContent })));
        check(chats.length === 2, 'reloaded: still signed in, two chats',
              chats);
        check(chats.length === 2 && `#chat=${chats[0].id}` === chatB
              && `#chat=${chats[1].id}` === chatA,
              '... newest first', chats);
        check(chats.length === 2 && chats[1].title === q1,
              '... titled by their first question', chats);

        // the newer chat: its answer still marked as from the cache
        await page.click(`#chat-list button[data-chat-id="${
            chatB.slice(6)}"]`);
        check(await waitText(page,
            '#messages .message.assistant:last-child .who',
            /from the cache/), 'reopened: the cached answer marked so');

        // open the older chat with the keyboard: its history
        await page.focus(`#chat-list button[data-chat-id="${
            chatA.slice(6)}"]`);
        await page.keyboard.press('Enter');
        await page.waitForFunction(
            (h) => location.hash === h
                   && document.querySelectorAll('#messages .message')
                      .length === 4, { timeout: WAIT }, chatA)
            .catch(() => null);
        const msgs = await page.$$eval('#messages .message', (l) =>
            l.map((m) => ({
                role: m.classList.contains('user') ? 'user' : 'assistant',
                text: m.querySelector('.text').textContent,
                sources: m.querySelectorAll('.sources li').length,
                who: m.querySelector('.who').textContent,
            })));
        check(msgs.length === 4 && msgs[0].text === q1 && msgs[2].text === q2
              && msgs[1].text === `Mock answer to: ${q1}`
              && msgs[3].role === 'assistant',
              'opened: the history, oldest first', msgs);
        check(msgs.length === 4 && msgs[1].sources > 0,
              '... with the answers\' sources', msgs);
        check(msgs.length === 4 && /written for this chat/.test(msgs[1].who)
              && /written for this chat/.test(msgs[3].who)
              && !/cache/.test(msgs[1].who + msgs[3].who),
              '... marked as written for this chat', msgs);
        check(await focused(page, 'chat-title'),
              '... the chat\'s title focused');
        check(await page.$eval('#chat-list [aria-current="true"]',
                               (b) => b.dataset.chatId)
              .catch(() => null) === chatA.slice(6),
              '... and marked current in the list');

        // keyboard focus is visible
        await page.keyboard.press('Tab');
        const outline = await page.evaluate(() => {
            const s = getComputedStyle(document.activeElement);
            return `${s.outlineStyle} ${s.outlineWidth}`;
        });
        check(!/^none/.test(outline), 'keyboard focus is visible', outline);

        // ---- narrow: a phone's width -------------------------------------

        await page.setViewport({ width: 360, height: 780 });
        const over = await page.evaluate(() =>
            document.documentElement.scrollWidth);
        check(over <= 360, `360 px wide: no sideways scrolling (${over} px)`);
        const askBox = await page.$eval('#question',
            (e) => e.getBoundingClientRect().width);
        check(askBox > 200 && askBox <= 360,
              `360 px wide: the question field fits (${askBox} px)`);
        if (SHOTS) {
            await page.screenshot({ path: path.join(SHOTS, 'web-360.png'),
                                    fullPage: true });
        }
        await page.setViewport({ width: 1280, height: 900 });

        // ---- validation: an empty and a too long question ------------------

        await page.$eval('#question', (e) => { e.value = ''; });
        await page.focus('#question');
        await page.keyboard.press('Enter');
        check(await waitText(page, '#question-error', /\S/),
              'an empty question: the API\'s error under the field',
              await text(page, '#question-error'));
        await page.$eval('#question', (e) => { e.value = 'x'.repeat(1001); });
        await page.focus('#question');
        await page.keyboard.press('Enter');
        check(await waitText(page, '#question-error', /1000/),
              'a question too long: the limit under the field',
              await text(page, '#question-error'));
        check(await page.$eval('#question',
                               (e) => e.getAttribute('aria-invalid'))
              === 'true', '... the field marked invalid');
        check((await page.$$('#messages .message')).length === 4,
              '... and nothing asked');

        // ---- a full queue: 503 with Retry-After next to the question ------

        await mock({ delay_ms: 8000 });
        const st = [await apiAsk(page, 'Which question fills the queue?'),
                    await apiAsk(page, 'Which one fills it up to the top?')];
        await fill(page, '#question', 'Is there room for one more?');
        await page.keyboard.press('Enter');
        check(await waitText(page, '#ask-error',
                             /queue full.*Try again in \d+ s/),
              'a full queue: 503 and its Retry-After shown',
              { queued: st, shown: await text(page, '#ask-error') });
        await mock({ delay_ms: 0 });

        // ---- older chats: the next page ------------------------------------

        const n = await page.evaluate(async () => {
            const h = { 'Content-Type': 'application/json',
                        Authorization: 'Bearer '
                            + sessionStorage.getItem('ragnx.token') };
            let ok = 0;
            for (let i = 0; i < 20; i++) {
                const r = await fetch('/api/ask', { method: 'POST', headers: h,
                    body: JSON.stringify({
                        query: 'How does the chat page stream an answer?' }) });
                ok += r.status === 200;
            }
            // the pool writes a cache hit's exchange a moment later
            for (let i = 0; i < 150; i++) {
                const r = await fetch('/api/chats?limit=100', { headers: h });
                const j = r.ok ? await r.json() : { chats: [] };
                if (j.chats.length >= 2 + ok) {
                    break;
                }
                await new Promise((res) => setTimeout(res, 100));
            }
            return ok;
        });
        await page.goto(BASE, { waitUntil: 'load' });
        await waitText(page, '#chat-list', /\S/);
        const before = (await page.$$('#chat-list li')).length;
        const more = await visible(page, '#more-chats');
        if (more) {
            await page.focus('#more-chats');
            await page.keyboard.press('Enter');
            await page.waitForFunction((b) => document.querySelectorAll(
                '#chat-list li').length > b, { timeout: WAIT }, before)
                .catch(() => null);
        }
        const after = (await page.$$('#chat-list li')).length;
        const ids = await page.$$eval('#chat-list button',
                                      (l) => l.map((b) => b.dataset.chatId));
        check(before === 20 && more && after > 20
              && new Set(ids).size === after,
              `chats paginated: ${before}, then ${after} with the older `
              + `page (${n} more asked)`);

        // ---- log out and in again ------------------------------------------

        await page.focus('#logout');
        await page.keyboard.press('Enter');
        check(await visible(page, '#auth') && !(await visible(page, '#app')),
              'logged out: the sign-in shown');
        check(await page.evaluate(() =>
            sessionStorage.getItem('ragnx.token')) === null,
              '... the token forgotten');
        await fill(page, '#login-email', email);
        await fill(page, '#login-password', 'wrong password');
        await page.keyboard.press('Enter');
        check(await waitText(page, '#login-error', /Invalid email or password/),
              'a wrong password: the API\'s error in the form');
        await fill(page, '#login-password', password);
        await page.keyboard.press('Enter');
        check(await waitText(page, '#whoami', new RegExp(email)),
              'logged in again');
        check(await waitText(page, '#chat-list', /How does the chat page/),
              '... the chats are there');

        // ---- a token the API refuses: back to the sign-in ------------------

        await page.evaluate(() =>
            sessionStorage.setItem('ragnx.token', 'not.a.token'));
        await page.goto(BASE, { waitUntil: 'load' });
        check(await waitText(page, '#auth-notice', /log in again/),
              'a refused token (401): back to the sign-in, with a notice');

        // ---- the CSP: nothing was refused, and a refusal would show ---------

        check(csp.length === 0, 'no Content-Security-Policy violation', csp);
        check(pageErrors.length === 0, 'no script errors', pageErrors);
        await page.evaluate(() => {
            const d = document.createElement('div');
            d.setAttribute('style', 'color: red');
            document.body.append(d);
        });
        await page.waitForFunction(() => true, { timeout: 1000 });
        const t0 = Date.now();
        while (csp.length === 0 && Date.now() - t0 < 5000) {
            await new Promise((r) => setTimeout(r, 50));
        }
        check(csp.some((v) => /style-src/.test(v)),
              'an inline style is refused, and seen here', csp);
    } finally {
        await browser.close();
    }
}

main().then(() => process.exit(0), (e) => {
    check(false, 'the browser script ran to its end', String(e.stack || e));
    process.exit(1);
});
