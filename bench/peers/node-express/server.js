// The seed's Node/Express Server-Sent Events chat server, as the classic article
// writes it. Kept unchanged on purpose: it is the reference the benchmark compares
// ssechat against (bench/run.py --servers ours,node). Do not optimise it.
const express = require('express');

const app = express();
const PORT = process.env.PORT || 3000;

let clients = [];

app.use(express.json());

// Send a message to every connected client.
function sendToAll(message) {
  clients.forEach((client) => client.write(`data: ${message}\n\n`));
}

app.get('/events', (req, res) => {
  res.setHeader('Content-Type', 'text/event-stream');
  res.setHeader('Cache-Control', 'no-cache');
  res.setHeader('Connection', 'keep-alive');
  res.flushHeaders();

  clients.push(res);
  sendToAll('A new user joined!');

  req.on('close', () => {
    clients = clients.filter((client) => client !== res);
  });
});

app.post('/send-message', (req, res) => {
  const { message } = req.body;
  sendToAll(message);
  res.status(200).send('Message sent successfully!');
});

app.listen(PORT, () => {
  console.log(`Server running on http://localhost:${PORT}`);
});
