// The chat page: accounts, the chat list, a chat's history and asking,
// with the answer streamed as it is written.  Everything shown comes
// from the REST API (api.js); text is only ever set as text, never as
// HTML.

import * as api from './api.js';
import { events } from './sse.js';

const CHATS_PAGE = 20;
const MESSAGES_PAGE = 50;
const RESUMES = 3;

const $ = (id) => document.getElementById(id);

const state = {
    user: null,
    chatId: null,          // the open chat; null: a new one
    chatsNext: null,
    messagesNext: null,
    asking: false,
};

// ---- errors next to what caused them ------------------------------------

function clearErrors(form) {
    for (const el of form.querySelectorAll('.error')) {
        el.textContent = '';
    }
    for (const el of form.querySelectorAll('[aria-invalid]')) {
        el.removeAttribute('aria-invalid');
    }
}

function retryText(e) {
    return e.retryAfter === null || e.retryAfter === undefined
           ? '' : ` Try again in ${e.retryAfter} s.`;
}

// The message for an error not about one field: the API's, with what a
// person can do about it.
function describe(e) {
    if (!(e instanceof api.ApiError)) {
        return 'The server cannot be reached. Check the connection and '
               + 'try again.';
    }
    if (e.status === 429) {
        return `Too many requests.${retryText(e)}`;
    }
    if (e.status === 503) {
        return `The service is busy (${e.message}).${retryText(e)}`;
    }
    return e.message;
}

// Field errors under their fields (the element the input's
// aria-describedby names), the rest in the form's own error line
// (prefix-error); the first invalid field gets the focus.
function showErrors(form, prefix, e) {
    clearErrors(form);
    let first = null;
    const rest = [];
    const fields = e instanceof api.ApiError ? e.fields : {};
    for (const [path, msgs] of Object.entries(fields)) {
        const input = form.elements.namedItem(path);
        const out = input && input.getAttribute
                    ? $(input.getAttribute('aria-describedby')) : null;
        if (out) {
            out.textContent = msgs.join('; ');
            input.setAttribute('aria-invalid', 'true');
            first ||= input;
        } else {
            rest.push(...msgs.map((m) => (path === '_root' ? m
                                                           : `${path}: ${m}`)));
        }
    }
    $(`${prefix}-error`).textContent = rest.length ? rest.join('; ')
                                       : first ? '' : describe(e);
    if (first) {
        first.focus();
    }
}

// ---- signing in and out --------------------------------------------------

function showAuth(notice) {
    state.user = null;
    $('auth-notice').textContent = notice || '';
    $('app').hidden = true;
    $('logout').hidden = true;
    $('whoami').hidden = true;
    $('auth').hidden = false;
    $('chat-list').replaceChildren();
    $('messages').replaceChildren();
    $('login-email').focus();
}

// a 401 from an authenticated call: the token is no longer good
function expired() {
    api.clearToken();
    showAuth('Your session has ended. Please log in again.');
}

function isAuthError(e) {
    return e instanceof api.ApiError && e.status === 401;
}

async function signedIn(user) {
    state.user = user;
    $('whoami').textContent = user.name ? `${user.name} (${user.email})`
                                        : user.email;
    $('whoami').hidden = false;
    $('logout').hidden = false;
    $('auth').hidden = true;
    $('app').hidden = false;
    for (const f of ['login', 'register']) {
        $(f).reset();
        clearErrors($(f));
    }
    $('auth-notice').textContent = '';
    const id = chatFromHash();
    await loadChats();
    if (id) {
        await openChat(id);
    } else {
        newChat();
    }
    $('question').focus();
}

async function authSubmit(ev, which) {
    ev.preventDefault();
    const form = ev.currentTarget;
    const body = {
        email: form.elements.namedItem('email').value,
        password: form.elements.namedItem('password').value,
    };
    const name = form.elements.namedItem('name');
    if (name && name.value.trim() !== '') {
        body.name = name.value;
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    clearErrors(form);
    try {
        const r = await (which === 'login' ? api.login(body)
                                           : api.register(body));
        api.setToken(r.token);
        await signedIn(r.user);
    } catch (e) {
        if (which === 'register' && e instanceof api.ApiError
            && e.status === 409)
        {
            e.fields = { email: [e.message] };
        }
        showErrors(form, which, e);
    } finally {
        button.disabled = false;
    }
}

function logout() {
    api.clearToken();
    history.replaceState(null, '', location.pathname);
    showAuth('You are logged out.');
}

// ---- the chat list ---------------------------------------------------------

function when(iso) {
    const t = document.createElement('time');
    t.dateTime = iso;
    const d = new Date(iso);
    t.textContent = Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
    return t;
}

function chatItem(c) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.chatId = c.id;
    b.append(c.title || 'Untitled chat', when(c.updatedAt || c.createdAt));
    b.addEventListener('click', () => openChat(c.id, true));
    if (c.id === state.chatId) {
        b.setAttribute('aria-current', 'true');
    }
    li.append(b);
    return li;
}

async function loadChats(more) {
    $('chats-error').textContent = '';
    try {
        const r = await api.chats(CHATS_PAGE, more ? state.chatsNext : null);
        const items = r.chats.map(chatItem);
        if (more) {
            $('chat-list').append(...items);
        } else {
            $('chat-list').replaceChildren(...items);
        }
        state.chatsNext = r.next || null;
        $('more-chats').hidden = !state.chatsNext;
    } catch (e) {
        if (isAuthError(e)) {
            expired();
            return;
        }
        $('chats-error').textContent = describe(e);
    }
}

function markCurrent() {
    for (const b of $('chat-list').querySelectorAll('button')) {
        if (b.dataset.chatId === state.chatId) {
            b.setAttribute('aria-current', 'true');
        } else {
            b.removeAttribute('aria-current');
        }
    }
}

// ---- a chat's history ------------------------------------------------------

function chatFromHash() {
    const m = /^#chat=([0-9a-fA-F-]{36})$/.exec(location.hash);
    return m ? m[1] : null;
}

function setChat(id, title) {
    state.chatId = id;
    history.replaceState(null, '', id ? `#chat=${id}` : location.pathname);
    $('chat-title').textContent = title;
    markCurrent();
}

function sourcesOf(list) {
    const box = document.createElement('div');
    box.className = 'sources';
    const h = document.createElement('p');
    h.textContent = list.length ? 'Sources:' : 'No sources.';
    box.append(h);
    if (list.length) {
        const ul = document.createElement('ul');
        for (const s of list) {
            const li = document.createElement('li');
            li.textContent = typeof s === 'string' ? s
                             : s.path || s.title || JSON.stringify(s);
            ul.append(li);
        }
        box.append(ul);
    }
    return box;
}

// One message: the li, and its text element (the streamed answer grows
// there).
function messageItem(role, text, sources, createdAt) {
    const li = document.createElement('li');
    li.className = `message ${role}`;
    const who = document.createElement('p');
    who.className = 'who';
    who.append(role === 'user' ? 'You' : 'Answer');
    if (createdAt) {
        who.append(' · ', when(createdAt));
    }
    const p = document.createElement('p');
    p.className = 'text';
    p.textContent = text;
    li.append(who, p);
    if (role === 'assistant' && Array.isArray(sources)) {
        li.append(sourcesOf(sources));
    }
    return { li, who, text: p };
}

function renderMessages(list) {
    return list.map((m) => {
        const item = messageItem(m.role, m.content, m.sources, m.createdAt);
        if (m.role === 'assistant') {
            badge(item, m.source === 'cache' ? 'from the cache'
                                             : 'written for this chat');
        }
        return item.li;
    });
}

function newChat() {
    setChat(null, 'New chat');
    state.messagesNext = null;
    $('earlier').hidden = true;
    $('messages').replaceChildren();
    $('messages-error').textContent = '';
    $('ask-status').textContent = '';
}

async function openChat(id, focus) {
    $('messages-error').textContent = '';
    $('ask-status').textContent = '';
    clearErrors($('ask'));
    try {
        const r = await api.messages(id, MESSAGES_PAGE);
        const btn = $('chat-list').querySelector(
            `button[data-chat-id="${CSS.escape(id)}"]`);
        const title = btn ? btn.firstChild.textContent : 'Chat';
        setChat(id, title);
        $('messages').replaceChildren(...renderMessages(r.messages));
        state.messagesNext = r.next || null;
        $('earlier').hidden = !state.messagesNext;
        if (focus) {
            $('chat-title').focus();
        }
    } catch (e) {
        if (isAuthError(e)) {
            expired();
            return;
        }
        if (e instanceof api.ApiError && e.status === 404) {
            newChat();
        }
        $('messages-error').textContent = describe(e);
    }
}

async function earlier() {
    try {
        const r = await api.messages(state.chatId, MESSAGES_PAGE,
                                     state.messagesNext);
        $('messages').prepend(...renderMessages(r.messages));
        state.messagesNext = r.next || null;
        $('earlier').hidden = !state.messagesNext;
    } catch (e) {
        if (isAuthError(e)) {
            expired();
            return;
        }
        $('messages-error').textContent = describe(e);
    }
}

// ---- asking ----------------------------------------------------------------

// Reads one stream into the answer; returns {ended, lastId, jobId}:
// ended once "done" or "error" came.
async function readAnswer(res, ans, last) {
    let lastId = last.lastId;
    let jobId = last.jobId;
    for await (const ev of events(res.body)) {
        if (ev.id) {
            lastId = ev.id;
        }
        let d = {};
        try {
            d = ev.data ? JSON.parse(ev.data) : {};
        } catch (e) {
            continue;
        }
        switch (ev.event) {
        case 'job':
            jobId = d.jobId || jobId;
            if (d.chatId && d.chatId !== state.chatId) {
                setChat(d.chatId, $('chat-title').textContent);
            }
            if (d.source === 'cache') {
                ans.cache = true;
                badge(ans, 'from the cache');
            }
            $('ask-status').textContent = ans.cache
                ? 'Answered from the cache.' : 'The answer is being written…';
            break;
        case 'delta':
            ans.text.append(d.text || '');
            break;
        case 'restart':
            // a failed attempt's text goes; the next attempt writes anew
            ans.text.textContent = '';
            $('ask-status').textContent = 'The answer is being written '
                                          + 'again…';
            break;
        case 'done':
            if (typeof d.answer === 'string') {
                ans.text.textContent = d.answer;
            }
            ans.li.append(sourcesOf(Array.isArray(d.sources)
                                    ? d.sources : []));
            if (!ans.cache) {
                badge(ans, 'written now');
            }
            $('ask-status').textContent = ans.cache
                ? 'Answered from the cache.' : 'Answered.';
            return { ended: true, lastId, jobId };
        case 'error':
            ans.text.textContent = '';
            ans.text.classList.add('failed');
            ans.text.textContent = `No answer: ${d.error || 'failed'}`;
            $('ask-status').textContent = 'The question failed.';
            return { ended: true, lastId, jobId };
        default:
            break;
        }
    }
    return { ended: false, lastId, jobId };
}

function badge(ans, text) {
    const b = document.createElement('span');
    b.className = 'badge';
    b.textContent = text;
    ans.who.append(b);
}

async function ask(ev) {
    ev.preventDefault();
    if (state.asking) {
        return;
    }
    const form = $('ask');
    const q = $('question').value;
    const body = { query: q };
    if (state.chatId) {
        body.chatId = state.chatId;
    }
    const newOne = !state.chatId;
    state.asking = true;
    $('ask-button').disabled = true;
    clearErrors(form);
    $('ask-status').textContent = 'Sending…';
    let ans = null;
    try {
        const res = await api.askStream(body);
        $('question').value = '';
        $('messages').append(messageItem('user', q).li);
        ans = messageItem('assistant', '');
        ans.cache = false;
        $('messages').append(ans.li);
        let r = await readAnswer(res, ans, {});
        // a connection that ended early: the rest from the job's stream
        for (let i = 0; !r.ended && r.jobId && i < RESUMES; i++) {
            $('ask-status').textContent = 'Reconnecting…';
            const more = await api.jobEvents(r.jobId, r.lastId);
            r = await readAnswer(more, ans, r);
        }
        if (!r.ended) {
            $('ask-status').textContent = 'The connection ended before the '
                                          + 'answer was complete.';
        }
        if (newOne) {
            await loadChats();
            markCurrent();
            const btn = $('chat-list').querySelector('[aria-current]');
            if (btn) {
                $('chat-title').textContent = btn.firstChild.textContent;
            }
        }
    } catch (e) {
        if (isAuthError(e)) {
            expired();
            return;
        }
        $('ask-status').textContent = '';
        showErrors(form, 'ask', e);
    } finally {
        state.asking = false;
        $('ask-button').disabled = false;
    }
}

// ---- wiring (no inline handlers: the CSP forbids them) ----------------------

function start() {
    $('login').addEventListener('submit', (e) => authSubmit(e, 'login'));
    $('register').addEventListener('submit', (e) => authSubmit(e, 'register'));
    $('logout').addEventListener('click', logout);
    $('new-chat').addEventListener('click', () => {
        newChat();
        $('question').focus();
    });
    $('more-chats').addEventListener('click', () => loadChats(true));
    $('earlier').addEventListener('click', earlier);
    $('ask').addEventListener('submit', ask);
    $('question').addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            $('ask').requestSubmit();
        }
    });

    if (!api.getToken()) {
        showAuth();
        return;
    }
    api.me().then(signedIn, (e) => {
        if (isAuthError(e)) {
            expired();
        } else {
            showAuth(describe(e));
        }
    });
}

start();
