"""The simulator viewer: a local web page over one env and one policy, with a memory inspector
(`embodied-view`, docs/viewer.md). `app` parses the options and runs the server; `session` steps the
simulator and the policy off the UI thread; `panels` turns a step into what the page draws;
`recorder` writes the session as dataset episodes; `server` is the FastAPI/websocket app."""
