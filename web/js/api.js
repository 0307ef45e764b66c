// The REST API of ragnx, same origin: every call, its errors as one
// shape, and the token.
//
// The token lives in sessionStorage: a reload keeps the person signed in
// (and so the open chat and the history), while closing the tab forgets
// it; other tabs and later visits never see it, unlike localStorage.  A
// script injected into the page could read it as it could read memory;
// the Content-Security-Policy (no inline script, 'self' only) is what
// keeps such scripts out.

const KEY = 'ragnx.token';

let token = sessionStorage.getItem(KEY);

export function getToken() {
    return token;
}

export function setToken(t) {
    token = t;
    sessionStorage.setItem(KEY, t);
}

export function clearToken() {
    token = null;
    sessionStorage.removeItem(KEY);
}

// An error answer: status, message, field errors ({field: [messages]})
// and the seconds of Retry-After, when given.
export class ApiError extends Error {
    constructor(status, body, retryAfter) {
        super(body && typeof body.error === 'string'
              ? body.error : `HTTP ${status}`);
        this.status = status;
        this.fields = fieldErrors(body || {});
        this.retryAfter = retryAfter;
    }
}

// Validation details as {path: [messages]}: the module's Zod-like
// flattened "details" ({"query": ["must be ..."]}), or Zod-style
// "issues" ([{path: ["query"], message}]).  Other details (the line and
// column of bad JSON) are not about a field.
function fieldErrors(body) {
    const out = {};
    const add = (k, m) => (out[k] ||= []).push(String(m));
    if (Array.isArray(body.issues)) {
        for (const i of body.issues) {
            const path = Array.isArray(i.path) ? i.path.join('.') : '';
            add(path || '_root', i.message);
        }
    }
    const d = body.details;
    if (d && typeof d === 'object' && !Array.isArray(d)) {
        for (const [k, v] of Object.entries(d)) {
            if (Array.isArray(v)) {
                v.forEach((m) => add(k, m));
            }
        }
    }
    return out;
}

// seconds, from either form of Retry-After
function retryAfter(res) {
    const v = res.headers.get('Retry-After');
    if (v === null) {
        return null;
    }
    if (/^\d+$/.test(v.trim())) {
        return Number(v.trim());
    }
    const at = Date.parse(v);
    return Number.isNaN(at)
           ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

export async function errorOf(res) {
    let body = null;
    try {
        body = await res.json();
    } catch (e) {
        body = null;
    }
    return new ApiError(res.status, body, retryAfter(res));
}

export function headers(extra) {
    const h = { Accept: 'application/json', ...extra };
    if (token) {
        h.Authorization = `Bearer ${token}`;
    }
    return h;
}

async function call(method, path, body) {
    const init = { method, headers: headers(), cache: 'no-store' };
    if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    if (!res.ok) {
        throw await errorOf(res);
    }
    return res.json();
}

export const register = (b) => call('POST', '/api/auth/register', b);
export const login = (b) => call('POST', '/api/auth/login', b);
export const me = () => call('GET', '/api/users/me');

function page(path, limit, before) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (before) {
        q.set('before', before);
    }
    return call('GET', `${path}?${q}`);
}

export const chats = (limit, before) => page('/api/chats', limit, before);
export const messages = (id, limit, before) =>
    page(`/api/chats/${encodeURIComponent(id)}/messages`, limit, before);

// POST /api/ask as a stream of server-sent events: the Response, whose
// body the caller reads (sse.js); an error answer throws ApiError.
export async function askStream(body, signal) {
    const res = await fetch('/api/ask', {
        method: 'POST',
        headers: headers({ 'Content-Type': 'application/json',
                           Accept: 'text/event-stream' }),
        body: JSON.stringify(body),
        cache: 'no-store',
        signal,
    });
    if (!res.ok) {
        throw await errorOf(res);
    }
    return res;
}

// GET /api/ask/{jobId}/events from after the last event seen: the rest
// of a stream whose connection ended before "done".
export async function jobEvents(jobId, lastId, signal) {
    const h = headers({ Accept: 'text/event-stream' });
    if (lastId) {
        h['Last-Event-ID'] = lastId;
    }
    const res = await fetch(`/api/ask/${encodeURIComponent(jobId)}/events`,
                            { headers: h, cache: 'no-store', signal });
    if (!res.ok) {
        throw await errorOf(res);
    }
    return res;
}
