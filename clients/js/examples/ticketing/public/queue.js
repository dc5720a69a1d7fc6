// A custom waiting page on @waitroom/client: join the room named in `?room=`, show the place in
// line, and at admission go to the room's target (the shop's seat page) with the token.
// A reload keeps the place: the session id (and the join's Idempotency-Key, while the join is
// unanswered) live in sessionStorage.

import { follow, join, leave, newIdempotencyKey, resume } from "@waitroom/client";

const $ = (id) => document.getElementById(id);
const room = new URLSearchParams(location.search).get("room") || "demo";
const storageKey = `queue:${room}`;
const controller = new AbortController();

function show(state, heading) {
  document.body.dataset.state = state;
  if (heading) $("heading").textContent = heading;
}

function showPosition({ position, waitingCount, estimatedWaitSeconds, prequeue }) {
  show("waiting", prequeue ? "The sale has not opened yet" : "You're in line");
  $("position").dataset.position = position === null ? "" : String(position);
  $("position").textContent = prequeue ? "" : position === 0 ? "You're next" : `${position + 1} of ${waitingCount}`;
  $("eta").textContent = Number.isInteger(estimatedWaitSeconds) ? `About ${Math.max(1, Math.round(estimatedWaitSeconds / 60))} min` : "";
  $("note").textContent = "";
  $("leave").hidden = false;
}

async function session() {
  const saved = JSON.parse(sessionStorage.getItem(storageKey) || "{}");
  if (saved.id) {
    try {
      const resumed = await resume(saved.id, { signal: controller.signal });
      if (resumed.view.status !== "EXPIRED") return resumed;
    } catch (error) {
      if (error.name === "AbortError") throw error;
    }
  }
  // Keep the key before sending, so a reload during the join gets the same place back.
  const idempotencyKey = saved.idempotencyKey || newIdempotencyKey();
  sessionStorage.setItem(storageKey, JSON.stringify({ idempotencyKey }));
  const joined = await join(room, {
    idempotencyKey,
    signal: controller.signal,
    onRetry: ({ error }) => {
      $("note").textContent = error.type === "room-full" ? "The line is full; trying again…" : "Reconnecting…";
    },
  });
  sessionStorage.setItem(storageKey, JSON.stringify({ id: joined.id }));
  return joined;
}

async function main() {
  const current = await session();
  $("leave").addEventListener("click", async () => {
    controller.abort();
    await leave(current);
    sessionStorage.removeItem(storageKey);
    show("left", "You left the line");
    $("position").textContent = "";
    $("eta").textContent = "";
    $("leave").hidden = true;
  });
  const final = await follow(current, {
    signal: controller.signal,
    onPosition: showPosition,
    onRetry: () => {
      $("note").textContent = "Reconnecting…";
    },
    onAdmitted: ({ token, targetUrl }) => {
      show("admitted", "It's your turn!");
      $("position").textContent = "";
      $("leave").hidden = true;
      sessionStorage.removeItem(storageKey);
      if (targetUrl) {
        const next = new URL(targetUrl);
        next.searchParams.set("waitroomToken", token);
        location.assign(next.href);
      }
    },
  });
  if (final.status === "EXPIRED") {
    sessionStorage.removeItem(storageKey);
    show("expired", final.expiredReason === "timeout" ? "Your place in line expired" : "Your place in line has ended");
    $("leave").hidden = true;
  }
}

main().catch((error) => {
  if (error.name === "AbortError") return;
  show("error", error.type === "unknown-room" ? "There is no such sale" : "Something went wrong");
  $("note").textContent = error.message;
});
