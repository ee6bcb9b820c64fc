// A Server-Sent Events parser (the WHATWG event-stream format): feed it text
// as it arrives, get back the complete events. Handles CRLF, CR and LF line
// ends, lines split across chunks, comments, and multi-line data.

export class SSEParser {
  constructor() {
    this.buf = '';
    this.data = [];
    this.event = '';
    this.sawCR = false;
  }

  // Returns the events completed by this piece of text: [{event, data}].
  push(text) {
    const out = [];
    let s = this.buf + text;
    // A CR at the end of the previous piece may be the first half of CRLF.
    if (this.sawCR && s.startsWith('\n')) s = s.slice(1);
    this.sawCR = false;
    let start = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.line(s.slice(start, i), out);
      if (c === 13) {
        if (i + 1 < s.length) {
          if (s.charCodeAt(i + 1) === 10) i++;
        } else {
          this.sawCR = true;
        }
      }
      start = i + 1;
    }
    this.buf = s.slice(start);
    return out;
  }

  line(line, out) {
    if (line === '') {
      if (this.data.length) out.push({ event: this.event || 'message', data: this.data.join('\n') });
      this.data = [];
      this.event = '';
      return;
    }
    if (line.charCodeAt(0) === 58) return; // ':' comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
  }
}
