// text/event-stream read from a fetch() body: EventSource cannot POST
// nor send an Authorization header.  Yields {event, data, id} for each
// event; comments (": ping") are skipped.

function parse(block) {
    let event = 'message';
    let id = null;
    const data = [];
    let fields = 0;
    for (const line of block.split('\n')) {
        if (line === '' || line.startsWith(':')) {
            continue;
        }
        const c = line.indexOf(':');
        const name = c < 0 ? line : line.slice(0, c);
        const value = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
        fields++;
        if (name === 'event') {
            event = value;
        } else if (name === 'data') {
            data.push(value);
        } else if (name === 'id') {
            id = value;
        }
    }
    return fields ? { event, data: data.join('\n'), id } : null;
}

export async function* events(body) {
    const reader = body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    try {
        for (;;) {
            const { value, done } = await reader.read();
            if (done) {
                break;
            }
            buf += dec.decode(value, { stream: true });
            // CRLF and CR end lines too; a CR last may be half a CRLF
            const keep = buf.endsWith('\r') ? '\r' : '';
            buf = buf.slice(0, buf.length - keep.length)
                     .replace(/\r\n?/g, '\n') + keep;
            let i;
            while ((i = buf.indexOf('\n\n')) >= 0) {
                const ev = parse(buf.slice(0, i));
                buf = buf.slice(i + 2);
                if (ev) {
                    yield ev;
                }
            }
        }
    } finally {
        // a caller that stops early closes the connection
        reader.cancel().catch(() => {});
    }
}
