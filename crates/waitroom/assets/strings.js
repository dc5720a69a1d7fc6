// Every user-visible string of the waiting page, plus a tiny translation helper.
//
// To add a language, add one object next to `en` keyed by its language subtag
// (`de`, `fr`, `pt-BR`, ...). Keys missing from it fall back to English one by one,
// so a partial translation is safe. Placeholders are `{name}`; numbers passed in
// `vars` are formatted with the reader's locale (`1,523` / `1.523` / `1 523`).
// A value that is an object is a plural: its keys are `Intl.PluralRules` categories
// (`zero`, `one`, `two`, `few`, `many`, `other`) chosen by `vars.count`; `other` is
// required. No string may contain HTML: the page only ever sets `textContent`.
"use strict";

window.WAITROOM_STRINGS = {
  en: {
    "page.title": "Waiting room",
    "page.titleWaiting": "{count} ahead · Waiting room",
    "page.titleNext": "You're next · Waiting room",
    "page.titleActive": "It's your turn! · Waiting room",
    "brand": "Waiting room",
    "room.label": "Line for {room}",

    "status.loading": "Connecting",
    "status.waiting": "In line",
    "status.prequeue": "Before the sale",
    "status.active": "Your turn",
    "status.expired": "Ended",
    "status.error": "Unavailable",

    "loading.heading": "Finding your place in line…",
    "loading.body": "This only takes a moment.",
    "loading.busy": "Lots of people are joining right now. We'll keep trying — no need to refresh.",

    "waiting.heading": "You're in line",
    "position.ahead": {
      one: "{count} person ahead of you",
      other: "{count} people ahead of you",
    },
    "position.next": "You're next!",
    "position.unknown": "Working out your place…",
    "position.random": "You're in the draw: whenever a place frees up, the next person is picked at random from everyone waiting.",
    "progress.label": "Your progress in line",
    "progress.moved": {
      one: "You've moved up {count} place since you joined.",
      other: "You've moved up {count} places since you joined.",
    },
    "eta.label": "Estimated wait",
    "eta.unknown": "Not yet — we'll tell you as soon as the line moves",
    "eta.lessThanMinute": "less than a minute",
    "eta.minutes": { one: "about {count} minute", other: "about {count} minutes" },
    "eta.hours": { one: "about {count} hour", other: "about {count} hours" },
    "eta.upToMinutes": { one: "up to {count} minute", other: "up to {count} minutes" },
    "eta.rangeMinutes": "between {low} and {high} minutes",
    "eta.rangeHours": "between {low} and {high} hours",
    "eta.moreThanDay": "more than a day",
    "waitingCount.label": "People in line",
    "waitingCount.value": { one: "{count} person", other: "{count} people" },
    "waiting.hint": "Keep this page open. When it's your turn, we'll take you to the sale automatically. You can switch tabs, and refreshing won't lose your place.",
    "waiting.hintNoStorage": "Keep this page open. When it's your turn, we'll take you to the sale automatically. You can switch tabs.",

    "prequeue.heading": "You're in — the sale hasn't opened yet",
    "prequeue.opensAtTime": "The sale opens at {time}.",
    "prequeue.opensAtDate": "The sale opens on {date} at {time}.",
    "prequeue.opensSoon": "The sale opens soon.",
    "prequeue.fair": "Everyone here before then gets a random place in line — no need to refresh.",
    "prequeue.countdownLabel": "Opens in",
    "prequeue.opening": "Opening now — drawing places…",

    "active.heading": "It's your turn!",
    "active.redirecting": "Taking you to the sale…",
    "active.continueText": "If nothing happens, use the button below.",
    "active.returnedText": "Continue to the sale when you're ready.",
    "active.link": "Continue to the sale",
    "active.noTarget": "Keep this page open while you complete your purchase.",
    "active.countdownLabel": "Your turn is held for",
    "active.announce": "It's your turn! Taking you to the sale.",
    "active.announceNoTarget": "It's your turn!",

    "countdown.days": { one: "{count} day", other: "{count} days" },

    "expired.heading.timeout": "Your place in line has expired",
    "expired.body.timeout": "Your place expired because this page stopped checking in — for example, the tab was closed, the device went to sleep, or the connection was lost for too long.",
    "expired.heading.timeoutActive": "Your turn has ended",
    "expired.body.timeoutActive": "Your time ran out, or this page stopped checking in while it was your turn.",
    "expired.heading.left": "You left the line",
    "expired.body.left": "You gave up your place. If you join again, you'll start at the back of the line.",
    "expired.heading.completed": "You're all done",
    "expired.body.completed": "Your turn is complete. Thanks for waiting!",
    "expired.heading.evicted": "You were removed from the line",
    "expired.body.evicted": "The organiser ended this place in line.",
    "expired.heading.closed": "This waiting room has closed",
    "expired.body.closed": "The organiser has closed this line, so there's nothing more to wait for here.",
    "expired.heading.unknown": "Your place in line is no longer available",
    "expired.body.unknown": "We couldn't find your place in line any more.",
    "rejoin": "Join the line again",

    "leave": "Leave the line",
    "leave.active": "Give up my turn",
    "leave.dialogTitle": "Leave the line?",
    "leave.dialogBody": "You'll lose your place. If you join again, you'll start at the back of the line.",
    "leave.dialogTitleActive": "Give up your turn?",
    "leave.dialogBodyActive": "Your turn will go to the next person in line.",
    "leave.confirm": "Leave the line",
    "leave.confirmActive": "Give up my turn",
    "leave.cancel": "Stay in line",
    "leave.failed": "We couldn't reach the waiting room to leave the line. Check your connection and try again.",

    "preview.notice": "Preview: this is how a place in line looks. This page has not joined the line, and its figures are examples.",
    "challenge.working": "Checking this browser before it joins the line: it solves a small puzzle that keeps bots from taking places. This takes a few seconds, once; keep this page open.",
    "connection.reconnecting": "Reconnecting… Your place is kept while we try again.",
    "connection.storage": "This browser isn't saving data for this site, so keep this page open: reloading it would lose your place.",

    "error.heading": "Something went wrong",
    "error.body": "Please try again in a moment.",
    "error.unavailable.heading": "This waiting room isn't open",
    "error.unavailable.body": "It may not have opened yet, or it may have closed. Check the link or try again later.",
    "error.badLink.heading": "This link doesn't look right",
    "error.badLink.body": "Check the address of this page and try again.",
    "error.offline.heading": "We can't reach the waiting room",
    "error.offline.body": "Check your connection, then try again.",
    "retry": "Try again",
  },
};

window.waitroomI18n = (function createI18n(catalogs, requested) {
  const FALLBACK = "en";

  // Pick the first requested language we have a catalog for: exact tag first
  // (`pt-BR`), then its primary subtag (`pt`). `?lang=xx` overrides, for translators.
  const override = new URLSearchParams(window.location.search).get("lang");
  const wanted = (override ? [override] : []).concat(Array.from(requested || []));
  let lang = FALLBACK;
  let locale = FALLBACK;
  for (const tag of wanted) {
    if (typeof tag !== "string" || tag === "") continue;
    const primary = tag.split("-")[0].toLowerCase();
    const exact = Object.keys(catalogs).find((key) => key.toLowerCase() === tag.toLowerCase());
    if (exact || catalogs[primary]) {
      lang = exact || primary;
      locale = tag; // keeps the reader's region for number and date formats (en-GB vs en-US)
      break;
    }
  }
  try {
    locale = Intl.getCanonicalLocales(locale)[0];
  } catch (_) {
    locale = lang;
  }

  const numberFormat = new Intl.NumberFormat(locale);
  const pluralRules = new Intl.PluralRules(locale);

  function lookup(key) {
    const own = catalogs[lang] && catalogs[lang][key];
    if (own !== undefined) return own;
    const fallback = catalogs[FALLBACK][key];
    return fallback !== undefined ? fallback : key;
  }

  function select(entry, vars) {
    if (typeof entry === "string") return entry;
    const count = vars && typeof vars.count === "number" ? vars.count : 0;
    return entry[pluralRules.select(count)] || entry.other;
  }

  function formatValue(value) {
    return typeof value === "number" ? numberFormat.format(value) : String(value);
  }

  // The translated string split into literal text and substituted values, so the
  // page can emphasise a value (the big position number) wherever a language puts it.
  function parts(key, vars) {
    const template = select(lookup(key), vars);
    const out = [];
    const pattern = /\{(\w+)\}/g;
    let last = 0;
    let match;
    while ((match = pattern.exec(template)) !== null) {
      if (match.index > last) out.push({ text: template.slice(last, match.index) });
      const name = match[1];
      const has = vars && Object.prototype.hasOwnProperty.call(vars, name);
      out.push(has ? { name, text: formatValue(vars[name]) } : { text: match[0] });
      last = pattern.lastIndex;
    }
    if (last < template.length) out.push({ text: template.slice(last) });
    return out;
  }

  function t(key, vars) {
    return parts(key, vars).map((part) => part.text).join("");
  }

  return { lang, locale, t, parts, formatNumber: (n) => numberFormat.format(n) };
})(window.WAITROOM_STRINGS, navigator.languages || [navigator.language]);
