// Server-Sent Events over fetch(): EventSource cannot send an Authorization header.
// Parsed as the HTML standard says: "field: value" lines, a blank line ends a message,
// lines starting with ":" are comments (the server's heartbeats).

import { ApiError, failure, headers, url } from "./api.js";

/** Splits a text stream into SSE messages: {id, event, data} (id is the last one seen). */
export class SseParser {
  constructor() {
    this.buffer = "";
    this.lastEventId = "";
    this.retry = null;
    this.reset();
  }

  reset() {
    this.data = [];
    this.event = "";
  }

  /** Feed a chunk of text; returns the messages it completed, and calls onComment for comments. */
  feed(chunk, onComment = () => {}) {
    this.buffer += chunk;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop();
    const messages = [];
    for (const line of lines) {
      if (line === "") {
        if (this.data.length) {
          messages.push({ id: this.lastEventId, event: this.event || "message", data: this.data.join("\n") });
        }
        this.reset();
        continue;
      }
      if (line.startsWith(":")) {
        onComment(line.slice(1).trim());
        continue;
      }
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "event") this.event = value;
      else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
      else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    }
    return messages;
  }
}

/**
 * Read GET <admin>/events/stream until it ends or signal aborts.
 * handlers: onOpen(), onMessage({id, event, data}), onComment(text), onPosition(id).
 * Resolves to {lastEventId, retry} when the server ends the stream; rejects with ApiError
 * (refused, failed, unreachable) or an AbortError.
 */
export async function readEventStream(params, { signal, lastEventId = "", handlers = {} } = {}) {
  const request = headers({ Accept: "text/event-stream" });
  if (lastEventId) request.set("Last-Event-ID", lastEventId);
  let response;
  try {
    response = await fetch(url("/events/stream", params), { headers: request, signal, cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, `The event stream cannot be reached (${error.message}).`);
  }
  if (!response.ok) throw await failure(response);
  handlers.onOpen?.();
  const parser = new SseParser();
  parser.lastEventId = lastEventId;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return { lastEventId: parser.lastEventId, retry: parser.retry };
      const before = parser.lastEventId;
      for (const found of parser.feed(value, handlers.onComment)) handlers.onMessage?.(found);
      if (parser.lastEventId !== before) handlers.onPosition?.(parser.lastEventId);
    }
  } finally {
    reader.releaseLock();
  }
}
