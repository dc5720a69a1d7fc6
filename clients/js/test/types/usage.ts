// Type-checked (never run) by test/types.test.js: the declarations of both packages, used as
// their READMEs show, must compile under `strict`; the `@ts-expect-error` lines must not.

import express from "express";
import { LIMITS, WaitroomError, follow, join, leave, resume, type SessionView } from "@waitroom/client";
import { AdmissionError, requireAdmission, verifyAdmission, type AdmissionClaims } from "@waitroom/node";

export async function page(render: (position: number | null) => void): Promise<SessionView> {
  const controller = new AbortController();
  const session = await join("eras-tour-2026-05-01", { baseUrl: "", onRetry: ({ error, delayMs }) => console.log(error.status, delayMs) });
  const again = await resume(session.id, { baseUrl: session.baseUrl });
  const view = await follow(again, {
    signal: controller.signal,
    onPosition: ({ position, waitingCount }) => render(position ?? waitingCount),
    onAdmitted: ({ token, targetUrl }) => console.log(token.length, targetUrl?.length),
    onExpired: (ended) => console.log(ended.expiredReason),
  });
  const left: SessionView = await leave(session);
  const status: "WAITING" | "ACTIVE" | "EXPIRED" = left.status;
  console.log(status, LIMITS.backoffMaxMs);
  try {
    await join("x");
  } catch (error) {
    if (error instanceof WaitroomError && error.retryable) console.log(error.type, error.retryAfterMs);
  }
  // @ts-expect-error the room id is a string
  await join(42);
  // @ts-expect-error no such event
  await follow(session, { onAdmission: () => {} });
  return view;
}

export async function service(token: string): Promise<AdmissionClaims> {
  const app = express();
  app.get("/select", requireAdmission({ jwksUrl: "https://queue.example.com/.well-known/jwks.json", room: "r" }), (req, res) => {
    res.send(req.admission?.sub);
  });
  app.get("/rooms/:room", requireAdmission({ jwksUrl: "https://q.example/.well-known/jwks.json", room: (req) => String(req.url) }));
  try {
    return await verifyAdmission(token, { jwksUrl: "https://queue.example.com/.well-known/jwks.json", room: "r", clockToleranceSeconds: 5 });
  } catch (error) {
    if (error instanceof AdmissionError) {
      const status: 401 | 403 | 503 = error.status;
      console.log(status, error.code);
    }
    throw error;
  }
}

// @ts-expect-error the room is required
verifyAdmission("t", { jwksUrl: "https://q.example/.well-known/jwks.json" });
