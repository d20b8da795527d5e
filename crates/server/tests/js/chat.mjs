// A real Matrix client (matrix-js-sdk) talking to Vouch's port only: it looks for OAuth
// (and must not find it), registers with the UIA dummy flow, logs in with a password,
// syncs, creates a room and sends a message, and sees it come back in its timeline.
// Prints one JSON line with what it saw; the Rust test asserts on it.
// Usage: node chat.mjs <node_modules dir> <base URL> <username>
import { pathToFileURL } from "node:url";
import path from "node:path";

const [modules, baseUrl, username] = process.argv.slice(2);
const sdk = await import(pathToFileURL(path.join(modules, "matrix-js-sdk/lib/index.js")).href);
sdk.logger?.disableAll?.();

const password = "correct horse battery";
const seen = {};
const anon = sdk.createClient({ baseUrl });

// OAuth-aware: the SDK asks for the auth metadata first; Vouch has none to give.
try {
  await anon.getAuthMetadata();
  seen.oauth = true;
} catch {
  seen.oauth = false;
}
seen.loginFlows = (await anon.loginFlows()).flows.map((f) => f.type);

// UIA registration with the dummy stage.
let session;
try {
  await anon.registerRequest({ username, password });
} catch (e) {
  session = e.data?.session;
}
const registered = await anon.registerRequest({
  username,
  password,
  auth: { type: "m.login.dummy", session },
  inhibit_login: true,
});
seen.registered = registered.user_id;

const login = await anon.loginRequest({
  type: "m.login.password",
  identifier: { type: "m.id.user", user: username },
  password,
});
const client = sdk.createClient({
  baseUrl,
  accessToken: login.access_token,
  userId: login.user_id,
  deviceId: login.device_id,
});
await client.startClient({ initialSyncLimit: 10 });
await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error("no first sync")), 30000);
  client.once(sdk.ClientEvent.Sync, (state) => {
    clearTimeout(timer);
    seen.sync = state;
    resolve();
  });
});
const { room_id } = await client.createRoom({ name: "js-sdk room" });
const arrived = new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error("message did not come back")), 30000);
  client.on(sdk.RoomEvent.Timeline, (event, room) => {
    if (room?.roomId === room_id && event.getType() === "m.room.message") {
      clearTimeout(timer);
      resolve(event.getContent().body);
    }
  });
});
await client.sendTextMessage(room_id, "hello from matrix-js-sdk");
seen.echo = await arrived;
seen.whoami = (await client.whoami()).user_id;
await client.logout(true);
client.stopClient();
console.log(JSON.stringify(seen));
process.exit(0);
