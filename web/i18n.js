// Every string the page shows, in English and Korean. The language is `?lang=` when given
// (en, ko), else the browser's first preferred language Sori has, else English. Elements of
// index.html name their string with data-i18n (text), data-i18n-placeholder, data-i18n-title
// and data-i18n-label (aria-label).

const catalogue = {
  en: {
    tagline: 'Video meetings on your own server.',
    cameraIsOff: 'Camera is off',
    noCamera: 'No camera',
    micLevel: 'Microphone level',
    camera: 'Camera',
    microphone: 'Microphone',
    speaker: 'Speaker',
    devices: 'Devices',
    devicesTitle: 'Camera, microphone and speaker',
    close: 'Close',
    deviceGone: '{device} was disconnected: now using {other}.',
    room: 'Room',
    yourName: 'Your name',
    accessToken: 'Access token',
    tokenPlaceholder: 'the token your organiser sent',
    join: 'Join room',
    people: 'People',
    chat: 'Chat',
    messageEveryone: 'Message everyone',
    chatReadOnly: 'You can read the chat but not write in it',
    send: 'Send',
    peopleAndChat: 'People and chat',
    muteMic: 'Mute mic',
    unmuteMic: 'Unmute mic',
    micModerated: 'Mic muted by moderator',
    stopCamera: 'Stop camera',
    startCamera: 'Start camera',
    cameraModerated: 'Camera stopped by moderator',
    shareScreen: 'Share screen',
    stopSharing: 'Stop sharing',
    record: 'Record',
    stopRecording: 'Stop recording',
    recordTitle: 'Record everyone in the room',
    lockRoom: 'Lock room',
    unlockRoom: 'Unlock room',
    endForAll: 'End for all',
    leave: 'Leave',
    micTitle: 'Microphone (M)',
    cameraTitle: 'Camera (V)',
    leaveTitle: 'Leave (Ctrl+Shift+L)',
    locked: 'locked',
    you: '(you)',
    confirmEnd: 'End the meeting for everyone?',
    youLeft: 'You left the room.',
    screenNotStarted: 'Screen sharing was not started: {why}',
    needsSecurePage: 'Camera and microphone need a secure page: open Sori over https:// (or on localhost).',
    joinedWithout: 'You are in the call without it.',
    cameraDenied: 'Camera access is blocked: allow the camera for this site in the browser (the icon in the address bar), then reload.',
    cameraMissing: 'No camera was found: connect one, then reload.',
    cameraBusy: 'The camera is in use by another application: close it, then reload.',
    cameraFailed: 'The camera did not start ({why}).',
    microphoneDenied: 'Microphone access is blocked: allow the microphone for this site in the browser (the icon in the address bar), then reload.',
    microphoneMissing: 'No microphone was found: connect one, then reload.',
    microphoneBusy: 'The microphone is in use by another application: close it, then reload.',
    microphoneFailed: 'The microphone did not start ({why}).',
    connectionLost: 'Connection to the server lost.',
    rejoined: 'Reconnected: you joined the room again.',
    someone: 'Someone',
    startedRecording: '{who} started recording the room.',
    stoppedRecording: '{who} stopped recording the room.',
    aModerator: 'A moderator',
    theServer: 'The server',
    removedYou: '{by} removed you from the room.',
    bannedYou: '{by} removed you from the room; you may not join it again.',
    endedMeeting: '{by} ended the meeting.',
    removed: 'You were removed from the room.',
    restarting: 'The server is restarting: reconnecting…',
    tokenRefused: 'Your access token was not accepted: {why}.',
    tokenNeeded: 'This server needs an access token: paste the one you were given.',
    replacedElsewhere: 'You joined this room from another tab or device.',
    connecting: 'connecting',
    reconnecting: 'reconnecting…',
    connected: 'connected',
    disconnected: 'disconnected',
    failed: 'failed',
    checking: 'checking',
    new: 'new',
    closed: 'closed',
    waiting: 'waiting for someone to join',
    mediaFailed: 'media failed',
    p2p: 'peer to peer',
    sfu: 'sfu',
    allowMic: 'Allow mic',
    mute: 'Mute',
    allowCamera: 'Allow camera',
    remove: 'Remove',
    ban: 'Ban',
    mutedByModerator: 'muted by moderator',
    micOff: 'mic off',
    cameraStoppedByModerator: 'camera stopped by moderator',
    cameraOff: 'camera off',
    connectingTile: 'Connecting…',
    screen: '{name} — screen',
    qualityAuto: 'Auto',
    qualityLow: 'Low',
    qualityMedium: 'Medium',
    qualityHigh: 'High',
    qualityToReceive: 'Video quality to receive',
    receivedQuality: 'Received quality',
    paused: 'paused',
    layerOf: 'layer {rid} ({n} of {of})',
    oneLayer: 'one layer',
    micMuted: 'Microphone off',
    connectionTitle: 'Connection {quality}: {rtt}, {loss}',
    connection_good: 'good',
    connection_fair: 'fair',
    connection_poor: 'poor',
    connectionUnknown: 'Connection quality: not measured yet',
    rtt: 'round trip {ms} ms',
    rttUnknown: 'round trip not measured',
    loss: '{pct} % loss',
    lossUnknown: 'loss not measured',
    pinTile: '{name}: pin',
    unpinTile: '{name}: unpin',
    youTile: '{name} (you)',
  },
  ko: {
    tagline: '내 서버에서 여는 화상 회의.',
    cameraIsOff: '카메라가 꺼져 있습니다',
    noCamera: '카메라 없음',
    micLevel: '마이크 음량',
    camera: '카메라',
    microphone: '마이크',
    speaker: '스피커',
    devices: '장치',
    devicesTitle: '카메라, 마이크, 스피커',
    close: '닫기',
    deviceGone: '{device} 연결이 끊겼습니다: 이제 {other}을(를) 씁니다.',
    room: '방',
    yourName: '이름',
    accessToken: '접근 토큰',
    tokenPlaceholder: '주최자가 보낸 토큰',
    join: '방에 들어가기',
    people: '참가자',
    chat: '채팅',
    messageEveryone: '모두에게 메시지',
    chatReadOnly: '채팅을 읽을 수만 있습니다',
    send: '보내기',
    peopleAndChat: '참가자와 채팅',
    muteMic: '마이크 끄기',
    unmuteMic: '마이크 켜기',
    micModerated: '진행자가 마이크를 껐습니다',
    stopCamera: '카메라 끄기',
    startCamera: '카메라 켜기',
    cameraModerated: '진행자가 카메라를 껐습니다',
    shareScreen: '화면 공유',
    stopSharing: '공유 중지',
    record: '녹화',
    stopRecording: '녹화 중지',
    recordTitle: '방 전체를 녹화합니다',
    lockRoom: '방 잠그기',
    unlockRoom: '방 잠금 해제',
    endForAll: '모두에게 종료',
    leave: '나가기',
    micTitle: '마이크 (M)',
    cameraTitle: '카메라 (V)',
    leaveTitle: '나가기 (Ctrl+Shift+L)',
    locked: '잠김',
    you: '(나)',
    confirmEnd: '모두의 회의를 종료할까요?',
    youLeft: '방에서 나왔습니다.',
    screenNotStarted: '화면 공유를 시작하지 못했습니다: {why}',
    needsSecurePage: '카메라와 마이크는 보안 페이지에서만 쓸 수 있습니다: https:// (또는 localhost)로 여세요.',
    joinedWithout: '지금은 그 장치 없이 참여합니다.',
    cameraDenied: '카메라 권한이 막혀 있습니다: 브라우저 주소 표시줄의 아이콘에서 이 사이트의 카메라를 허용한 뒤 새로 고치세요.',
    cameraMissing: '카메라를 찾지 못했습니다: 카메라를 연결한 뒤 새로 고치세요.',
    cameraBusy: '다른 앱이 카메라를 쓰고 있습니다: 그 앱을 닫은 뒤 새로 고치세요.',
    cameraFailed: '카메라를 켜지 못했습니다 ({why}).',
    microphoneDenied: '마이크 권한이 막혀 있습니다: 브라우저 주소 표시줄의 아이콘에서 이 사이트의 마이크를 허용한 뒤 새로 고치세요.',
    microphoneMissing: '마이크를 찾지 못했습니다: 마이크를 연결한 뒤 새로 고치세요.',
    microphoneBusy: '다른 앱이 마이크를 쓰고 있습니다: 그 앱을 닫은 뒤 새로 고치세요.',
    microphoneFailed: '마이크를 켜지 못했습니다 ({why}).',
    connectionLost: '서버와의 연결이 끊겼습니다.',
    rejoined: '다시 연결되어 방에 다시 들어왔습니다.',
    someone: '누군가가',
    startedRecording: '{who} 방 녹화를 시작했습니다.',
    stoppedRecording: '{who} 방 녹화를 멈췄습니다.',
    aModerator: '진행자가',
    theServer: '서버가',
    removedYou: '{by} 나를 방에서 내보냈습니다.',
    bannedYou: '{by} 나를 방에서 내보냈습니다. 다시 들어올 수 없습니다.',
    endedMeeting: '{by} 회의를 종료했습니다.',
    removed: '방에서 내보내졌습니다.',
    restarting: '서버가 다시 시작하는 중입니다: 다시 연결하는 중…',
    tokenRefused: '접근 토큰이 받아들여지지 않았습니다: {why}.',
    tokenNeeded: '이 서버는 접근 토큰이 필요합니다: 받은 토큰을 붙여 넣으세요.',
    replacedElsewhere: '다른 탭이나 기기에서 이 방에 들어왔습니다.',
    connecting: '연결 중',
    reconnecting: '다시 연결하는 중…',
    connected: '연결됨',
    disconnected: '연결 끊김',
    failed: '연결 실패',
    checking: '확인 중',
    new: '준비 중',
    closed: '닫힘',
    waiting: '다른 참가자를 기다리는 중',
    mediaFailed: '미디어 연결 실패',
    p2p: 'P2P',
    sfu: 'SFU',
    allowMic: '마이크 허용',
    mute: '음소거',
    allowCamera: '카메라 허용',
    remove: '내보내기',
    ban: '차단',
    mutedByModerator: '진행자가 음소거함',
    micOff: '마이크 꺼짐',
    cameraStoppedByModerator: '진행자가 카메라를 끔',
    cameraOff: '카메라 꺼짐',
    connectingTile: '연결 중…',
    screen: '{name} — 화면',
    qualityAuto: '자동',
    qualityLow: '낮음',
    qualityMedium: '중간',
    qualityHigh: '높음',
    qualityToReceive: '받을 화질',
    receivedQuality: '받는 화질',
    paused: '일시 중지',
    layerOf: '레이어 {rid} ({of}개 중 {n})',
    oneLayer: '단일 레이어',
    micMuted: '마이크 꺼짐',
    connectionTitle: '연결 {quality}: {rtt}, {loss}',
    connection_good: '좋음',
    connection_fair: '보통',
    connection_poor: '나쁨',
    connectionUnknown: '연결 품질: 아직 측정 전',
    rtt: '왕복 {ms} ms',
    rttUnknown: '왕복 시간 측정 전',
    loss: '손실 {pct} %',
    lossUnknown: '손실 측정 전',
    pinTile: '{name}: 크게 보기',
    unpinTile: '{name}: 크게 보기 해제',
    youTile: '{name} (나)',
  },
};

function choose() {
  const asked = new URLSearchParams(location.search).get('lang');
  const wanted = [asked, ...(navigator.languages || [navigator.language])]
    .filter(Boolean)
    .map((l) => l.toLowerCase().split('-')[0]);
  return wanted.find((l) => l in catalogue) || 'en';
}

/** The page's language: `en` or `ko`. */
export const lang = choose();

/** The string `key` in the page's language, `{name}`s filled from `vars`. */
export function t(key, vars = {}) {
  const s = catalogue[lang][key] ?? catalogue.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? vars[k] : `{${k}}`));
}

/** Who did something, as the subject of a sentence: `name`, or the string `fallback`. */
export function subject(name, fallback) {
  if (!name) return t(fallback);
  return lang === 'ko' ? `${name} 님이` : name;
}

/** Puts the page's static strings in its language. */
export function translatePage() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const [attr, name] of [['placeholder', 'i18nPlaceholder'], ['title', 'i18nTitle'], ['aria-label', 'i18nLabel']]) {
    for (const el of document.querySelectorAll(`[data-${attr === 'aria-label' ? 'i18n-label' : 'i18n-' + attr}]`)) {
      el.setAttribute(attr, t(el.dataset[name]));
    }
  }
}

/** "Ada muted Bo", as this participant reads it: `m` a moderation, `me` this participant's id. */
export function moderationText(m, me) {
  const self = m.by === me;
  const target = m.target === me;
  const byName = m.by_name.charAt(0).toUpperCase() + m.by_name.slice(1);
  if (lang === 'ko') {
    const by = self ? '내가' : (m.by === 'server' ? '서버에서' : `${m.by_name} 님이`);
    const whose = target ? '내' : `${m.target_name} 님의`;
    const whom = target ? '나를' : `${m.target_name} 님을`;
    return {
      'mute-audio': `${by} ${whose} 마이크를 껐습니다.`,
      'unmute-audio': `${by} ${whose} 마이크를 다시 허용했습니다.`,
      'mute-video': `${by} ${whose} 카메라를 껐습니다.`,
      'unmute-video': `${by} ${whose} 카메라를 다시 허용했습니다.`,
      'remove': `${by} ${whom} 방에서 내보냈습니다.`,
      'ban': `${by} ${whom} 방에서 영구히 내보냈습니다.`,
      'lock': `${by} 방을 잠갔습니다: 새로 들어올 수 없습니다.`,
      'unlock': `${by} 방 잠금을 풀었습니다.`,
    }[m.action] || null;
  }
  const who = self ? 'You' : byName;
  const whom = target ? 'you' : m.target_name;
  return {
    'mute-audio': `${who} muted ${whom}.`,
    'unmute-audio': `${who} let ${whom} unmute.`,
    'mute-video': `${who} stopped ${whom === 'you' ? 'your' : whom + "'s"} camera.`,
    'unmute-video': `${who} let ${whom} start ${whom === 'you' ? 'your' : 'their'} camera.`,
    'remove': `${who} removed ${whom} from the room.`,
    'ban': `${who} removed ${whom} from the room for good.`,
    'lock': `${who} locked the room: nobody new can join.`,
    'unlock': `${who} unlocked the room.`,
  }[m.action] || null;
}
